r"""Which layers have an exact dual form, and how each one is a linear map ``y = W x + b`` of its keys.

Irie, Csordás, Schmidhuber (2022), "The Dual Form of Neural Networks Revisited": any layer whose
output is linear in its weights, ``y = W x + b``, trained by SGD has ``W_T = a_0 W_0 + sum_t c_t e_t x_t^T``.
The recorder needs, per layer type, the key rows ``x_t``, the value rows ``e_t = dL/dy_t`` and the
map between the dual matrix ``W`` ``(d_value, d_key)`` and the module's parameter:

============  ==========================  =============================================  ===================
kind          module                      key row ``x_t``                                ``W`` vs parameter
============  ==========================  =============================================  ===================
``linear``    ``nn.Linear``               the input row ``(d_in,)``                      ``weight``
``conv``      ``nn.Conv1d/2d/3d``         one input patch ``(C * prod(k),)`` (unfold),   ``weight.reshape(out, -1)``
                                          one row per output position
``embedding`` ``nn.Embedding``            one-hot token id ``(V,)``, stored as the id    ``weight.T``
``lstm``      ``nn.LSTM``, per layer ``k``  view ``ih_l<k>``: the input ``x_t``;           ``weight_ih_l<k>``,
                                          view ``hh_l<k>``: ``h_{t-1}``                  ``weight_hh_l<k>``
============  ==========================  =============================================  ===================

A convolution's bias is a constant-1 key at every output position; an embedding has no bias.
Embeddings are recorded only when named in ``layers=`` (their attention is a lookup of the
slots of the same token). An ``nn.LSTM`` is recorded as two views per layer
(:mod:`qimia.dual.recurrent`), named ``<module>.ih_l<k>`` and ``<module>.hh_l<k>``; it runs
unrolled while it is watched. ``nn.GRU``, ``nn.RNN``, the recurrent cells and
``nn.MultiheadAttention`` are refused by name: their weights are applied inside one fused or
functional call, so no hook sees their per-step inputs or gate gradients. Build them from
``nn.Linear`` (one call per time step) to record them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from qimia.dual import recurrent
from qimia.dual.errors import DualFormError
from qimia.dual.store import LayerSpec, to_tensor

DEFAULT_KINDS = ("linear", "conv", "lstm")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FUSED_RECURRENT = (nn.RNNBase, nn.RNNCellBase)

# on_use(name, module, x, y): one call of a watched layer; ``module`` is None for an LSTM view,
# ``x`` its input (keys) and ``y`` the output whose gradient is the layer's values.
OnUse = Callable[[str, "nn.Module | None", torch.Tensor, torch.Tensor], None]


def layer_kind(module: nn.Module | None) -> str | None:
    """``"linear"``, ``"conv"``, ``"embedding"``, ``"lstm"`` or None (no recorded form)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _CONV):
        return "conv"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if type(module) is nn.LSTM:
        return "lstm"
    return None


def _trainable(module: nn.Module) -> bool:
    """Whether a recordable module's weights are trained (all of an LSTM's, a layer's ``weight``)."""
    if layer_kind(module) == "lstm":
        return any(p.requires_grad for p in module.parameters())
    return module.weight.requires_grad


def refusal(module: nn.Module, owner: str | None) -> str | None:
    """Why a module of a recordable type still has no exact dual form here (None if it has one).

    ``owner`` names an enclosing ``nn.MultiheadAttention`` (which applies its ``out_proj`` functionally).
    """
    if layer_kind(module) == "lstm":
        return recurrent.lstm_refusal(module)
    if owner is not None:
        return (f"nn.MultiheadAttention {owner!r} applies it functionally (F.multi_head_attention_forward reads "
                "out_proj.weight directly, so no forward hook sees its input); build the attention from nn.Linear "
                "projections to record it")
    if layer_kind(module) is not None and not isinstance(module.weight, nn.Parameter):
        return ("its weight is computed from other parameters (weight_norm, spectral_norm or another "
                "parametrization), so SGD does not update W itself; record the layer without the parametrization")
    if isinstance(module, _CONV) and module.groups != 1:
        return (f"groups={module.groups}: each group is a separate linear map of its own channels; use groups=1 "
                "or split the convolution into one module per group")
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            return "max_norm renormalises the weight in place during forward; use max_norm=None"
        if module.sparse:
            return "sparse=True gives sparse gradients, which the checks cannot read; use sparse=False"
        if module.scale_grad_by_freq:
            return "scale_grad_by_freq rescales each token's gradient by its batch count; use scale_grad_by_freq=False"
    return None


def unrecorded_reason(module: nn.Module) -> str:
    """Why a trainable module that is not recorded has no recorded dual form."""
    if isinstance(module, _FUSED_RECURRENT):
        return ("fused recurrent kernel: all time steps run in one call, so the per-step keys [x_t; h_{t-1}] and "
                "gate gradients are not visible to hooks (only nn.LSTM itself is unrolled for recording); build "
                "the cell from nn.Linear (one call per step) or use nn.LSTM to record it exactly")
    if isinstance(module, nn.MultiheadAttention):
        return ("its projections are applied functionally inside F.multi_head_attention_forward; build the "
                "attention from nn.Linear projections to record it exactly")
    if isinstance(module, nn.Embedding):
        return "embeddings are recorded only on request: pass layers=[...] with its name to record it exactly"
    return ("not a recorded layer type (nn.Linear, nn.Conv1d/2d/3d, nn.Embedding); its parameters are trained "
            "but have no memory")


def layer_specs(chosen: list[tuple[str, nn.Module]], param_names: dict[int, str]) -> list[LayerSpec]:
    """The recorded layers of the chosen modules, in order: one per module, two per LSTM layer."""
    specs: list[LayerSpec] = []
    for name, module in chosen:
        if layer_kind(module) == "lstm":
            specs += [recurrent.view_spec(view, len(specs) + i, module, param_names)
                      for i, view in enumerate(recurrent.view_names(name, module))]
        else:
            specs.append(layer_spec(name, len(specs), module, param_names))
    return specs


def layer_spec(name: str, index: int, module: nn.Module, param_names: dict[int, str]) -> LayerSpec:
    """The :class:`LayerSpec` of a recordable module (bias recorded as ``None`` when absent)."""
    kind = layer_kind(module)
    weight = module.weight
    if kind == "embedding":
        d_key, d_value = weight.shape                                   # (V, D): W = weight.T
    else:
        d_value, d_key = weight.shape[0], math.prod(weight.shape[1:])
    bias = getattr(module, "bias", None)
    return LayerSpec(name=name, index=index, d_key=int(d_key), d_value=int(d_value), weight=param_names[id(weight)],
                     bias=param_names[id(bias)] if bias is not None else None, kind=kind,
                     weight_shape=tuple(weight.shape))


def _conv_padding(module: nn.Module) -> list[int]:
    """``F.pad`` amounts (last spatial dim first) equivalent to the module's padding."""
    pads: list[tuple[int, int]] = []
    for i, (k, d) in enumerate(zip(module.kernel_size, module.dilation)):
        if module.padding == "valid":
            pads.append((0, 0))
        elif module.padding == "same":
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        else:
            pads.append((module.padding[i], module.padding[i]))
    return [p for pair in reversed(pads) for p in pair]


def conv_patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B * L, C * prod(k))`` input patches of a convolution, rows in output order ``(B, L_1, ..., L_n)``.

    ``y[b, :, l] = weight.reshape(out, -1) @ patch[b, l] + bias``, with the patch flattened
    channel-major like the weight ``(out, C, k_1, ..., k_n)``.
    """
    nd = len(module.kernel_size)
    if x.ndim != nd + 2:
        raise DualFormError(f"a recorded {type(module).__name__} got an input of shape {tuple(x.shape)}; inputs must "
                            f"be batched (B, C, {', '.join('L' * nd)}) so that every patch belongs to one example.")
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = F.pad(x, _conv_padding(module), mode=mode)
    for i, (k, s, d) in enumerate(zip(module.kernel_size, module.stride, module.dilation)):
        x = x.unfold(2 + i, d * (k - 1) + 1, s)[..., ::d]              # appends the window of dim i
    perm = (0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd))        # (B, L..., C, k...)
    return x.permute(perm).reshape(-1, module.weight.shape[1:].numel())


def key_rows(spec: LayerSpec, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stored keys of one call: ``(n, d_key)`` rows, or ``(n, 1)`` int64 token ids for an embedding."""
    if spec.kind == "conv":
        return conv_patches(module, x.detach())
    if spec.kind == "embedding":
        return x.detach().reshape(-1, 1).to(torch.int64)
    return x.detach().reshape(-1, spec.d_key)


def output_rows(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``(n, d_value)`` rows of a layer output (or its gradient), aligned with the key rows."""
    if layer_kind(module) == "conv":
        return y.detach().flatten(2).transpose(1, 2).reshape(-1, y.shape[1])      # (B * L, out)
    return y.detach().reshape(-1, y.shape[-1])


def value_rows(spec: LayerSpec, module: nn.Module, grad: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``(n, d_value)`` rows of ``e = dL/dy`` aligned with :func:`key_rows` (padding tokens get zero values)."""
    values = output_rows(module, grad)
    if spec.kind == "embedding" and module.padding_idx is not None:
        values = values.masked_fill(keys == module.padding_idx, 0.0)  # the padding row gets no gradient
    return values


def query_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Dense ``(n, d_key)`` queries for a layer input: rows, patches, or one-hot tokens for an embedding."""
    kind = layer_kind(module)
    if kind == "embedding":
        return F.one_hot(x.reshape(-1).long(), module.num_embeddings).to(module.weight.dtype)
    if kind == "conv":
        return conv_patches(module, x.detach())
    return x.detach().reshape(-1, x.shape[-1])


def to_param(spec: LayerSpec, matrix: torch.Tensor) -> torch.Tensor:
    """The dual matrix ``W`` ``(d_value, d_key)`` in the parameter's own shape."""
    return matrix.T if spec.kind == "embedding" else matrix.reshape(spec.weight_shape)


def from_param(spec: LayerSpec, weight: torch.Tensor) -> torch.Tensor:
    """The parameter as the dual matrix ``W`` ``(d_value, d_key)``."""
    return weight.T if spec.kind == "embedding" else weight.reshape(spec.d_value, spec.d_key)


def load_keys(spec: LayerSpec, block: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """A block of stored keys on ``device``: ``dtype`` rows, or int64 token ids for an embedding."""
    return to_tensor(block, device, torch.int64 if spec.kind == "embedding" else dtype)


def key_dot(spec: LayerSpec, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``(M, n)`` products ``x_i . x`` of dense queries ``(M, d_key)`` with stored keys."""
    if spec.kind == "embedding":
        return queries[:, keys[:, 0]]                                   # one-hot key: a column lookup
    return queries @ keys.T


def add_outer(spec: LayerSpec, matrix: torch.Tensor, weighted_values: torch.Tensor, keys: torch.Tensor) -> None:
    """``matrix += weighted_values.T @ keys`` in place (``(d_value, d_key)``, values ``(n, d_value)``)."""
    if spec.kind == "embedding":
        matrix.index_add_(1, keys[:, 0], weighted_values.T)
    else:
        matrix += weighted_values.T @ keys


def key_columns(spec: LayerSpec, keys: torch.Tensor, cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(n, P)`` entries ``x_i[cols]`` of the keys (one-hot indicators for an embedding)."""
    if spec.kind == "embedding":
        return (keys[:, :1] == cols[None, :]).to(dtype)
    return keys.index_select(1, cols).to(dtype)


def dual_coords(spec: LayerSpec, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` in the dual matrix of flat indices into the weight parameter."""
    if spec.kind == "embedding":
        return flat % spec.d_value, flat // spec.d_value                # weight (V, D) = W.T
    return flat // spec.d_key, flat % spec.d_key


def select_layers(model: nn.Module, names: list[str] | None) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """The modules to record, and ``"name (Type): reason"`` for every trained module left out.

    ``names=None`` selects every trainable layer of a :data:`DEFAULT_KINDS` kind that has an exact
    form. A named module without an exact form raises :class:`DualFormError` with the reason.
    """
    modules = dict(model.named_modules())
    attention = [n for n, m in modules.items() if isinstance(m, nn.MultiheadAttention)]

    def owner(name: str) -> str | None:
        return next((a for a in attention if name.startswith(a + ".")), None)

    candidates = {n: m for n, m in modules.items() if layer_kind(m) is not None and _trainable(m)}
    if names is None:
        chosen = [(n, m) for n, m in candidates.items()
                  if layer_kind(m) in DEFAULT_KINDS and refusal(m, owner(n)) is None]
    else:
        trained = {n for n, m in modules.items() if any(p.requires_grad for p in m.parameters())}
        unknown = [n for n in names if n not in candidates and n not in trained]
        if unknown:
            raise ValueError(f"layers {unknown} are not trainable nn.Linear, nn.Conv1d/2d/3d, nn.Embedding or "
                             f"nn.LSTM modules of the model; available: {sorted(candidates)}.")
        chosen = []
        for n, m in modules.items():
            if n in names:
                why = _reason(m, owner(n))
                if why is not None:
                    raise DualFormError(f"layer {n} ({type(m).__name__}) cannot be recorded exactly: {why}.")
                chosen.append((n, m))
    recorded = {id(p) for _, m in chosen for p in m.parameters()}
    left = []
    for n, m in modules.items():
        if owner(n) is not None or ".parametrizations." in f".{n}.":   # reported with the module they serve
            continue
        whole = isinstance(m, nn.MultiheadAttention) or parametrize.is_parametrized(m)
        own = m.parameters() if whole else m.parameters(recurse=False)
        if any(p.requires_grad and id(p) not in recorded for p in own):
            left.append(f"{n or '<model>'} ({type(m).__name__}): {_reason(m, None) or unrecorded_reason(m)}")
    return chosen, left


def _reason(module: nn.Module, owner: str | None) -> str | None:
    """Why ``module`` is not recorded exactly (None for a recordable layer with an exact form)."""
    if layer_kind(module) is None:
        return unrecorded_reason(module)
    if layer_kind(module) != "lstm" and not module.weight.requires_grad:
        return "its weight is frozen (a bias trained alone is not recorded)"
    return refusal(module, owner)


def check_untied(model: nn.Module, chosen: list[tuple[str, nn.Module]]) -> None:
    """Refuse a recorded parameter that any other module also owns (weight tying)."""
    owners: dict[int, list[str]] = {}
    for n, m in model.named_modules():
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), []).append(n)
    for name, mod in chosen:
        for p in mod.parameters(recurse=False):
            names = owners.get(id(p), [])
            if len(names) > 1:
                other = next(o for o in names if o != name)
                raise DualFormError(
                    f"modules {name!r} and {other!r} share one weight: the dual form keeps one memory per module, "
                    "and a tied parameter's update is the sum of both modules' uses with different keys (e.g. an "
                    "embedding's token ids and an output layer's hidden states), so neither memory alone rebuilds "
                    "it. Untie the weights, or call the same module twice instead (every use of a module is "
                    "recorded).")


class WatchHandle:
    """What :func:`watch` attached; ``remove()`` detaches it (like a hook's handle)."""

    def __init__(self) -> None:
        self._hooks: list[Any] = []
        self._taps: list[tuple[nn.Module, Any]] = []

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        for lstm, tap in self._taps:
            recurrent.remove_tap(lstm, tap)
        self._hooks.clear()
        self._taps.clear()


def watch(model: nn.Module, names: list[str], on_use: OnUse, active: Callable[[], bool] = lambda: True) -> WatchHandle:
    """Call ``on_use(name, module, x, y)`` on every call of the layers ``names`` of ``model``.

    A name is a module's (a forward hook gives its input and output) or an LSTM view's
    (``<module>.ih_l<k>`` / ``.hh_l<k>``: the LSTM runs :func:`~qimia.dual.recurrent.unrolled_lstm`
    while ``active()`` and its fused kernel otherwise; ``module`` is None, ``x`` the view's keys
    ``(B, T, d_key)`` and ``y`` the input product ``z_x`` ``(B, T, 4H)``).
    """
    handle = WatchHandle()
    views: dict[str, set[str]] = {}
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            parts = recurrent.split_view(name)
            if parts is None or layer_kind(model.get_submodule(parts[0])) != "lstm":
                raise
            views.setdefault(parts[0], set()).add(name)
            continue
        handle._hooks.append(module.register_forward_hook(lambda m, a, o, n=name: on_use(n, m, a[0], o)))
    for parent, wanted in views.items():
        lstm = model.get_submodule(parent)

        def tap(k: int, x: torch.Tensor, h_prev: torch.Tensor, z_x: torch.Tensor,
                parent: str = parent, wanted: set[str] = wanted) -> None:
            for part, keys in (("ih", x), ("hh", h_prev)):
                if (view := recurrent.view_name(parent, part, k)) in wanted:
                    on_use(view, None, keys, z_x)

        recurrent.add_tap(lstm, tap, active)
        handle._taps.append((lstm, tap))
    return handle
