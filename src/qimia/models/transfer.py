"""Transfer learning by reading a (frozen) base network's whole depth: ``qimia_transfer_head``,
and the standard recipes it is compared with, ``transfer_head`` and ``linear_probe``.

    features  f_1 .. f_N = the base's per-block outputs on x           # (B, C_i, H_i, W_i) or (B, T, D_i)
    memory    v_i = W_i pool(f_i),  k_i = K_i v_i                      # (B, dim), (B, heads, d_k)
    head      u_0 = v_N (last-layer features)
              u   = mixer([MLP_1, ..., MLP_depth])(u_0, external=(k_1..k_N, v_1..v_N)).output
    logits    = W_out LayerNorm(u)                                     # (B, num_classes)

* ``qimia_transfer_head`` (``mixer="qimia"``): every head block and the readout attend over all
  of the base's blocks (the external slots) and the head's own slots.
* ``transfer_head`` (``mixer="residual"``): the standard recipe, last-layer features + a small
  residual MLP head of the same size; ``linear_probe``: last-layer features + one linear layer.
* ``concat_transfer_head`` (``features="all"``): the control that sees every block *without*
  attention: ``u_0 = sum_i v_i``, a linear map of all pooled features concatenated, then the
  residual MLP head.
* Fine-tuning is any of them with ``freeze_base=False`` (the base then trains with the head).

The base is any registry model (``base="qimia_resnet20"``, ``base_kwargs``, ``base_checkpoint``:
a ``state_dict`` file or a Lightning checkpoint) or a torchvision model
(``base="torchvision:resnet50"``, ``base_checkpoint`` = its weights file, e.g. downloaded
pretrained weights). :class:`FeatureMemory` taps the base with forward hooks: by default every
slot of every depth-mixing container (registry models) or every block ``layerK.J`` (torchvision
ResNets); ``tap_layers=[...]`` names other modules.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from qimia.layers import DepthMemory, DepthOutput
from qimia.models.base import RegistryModel
from qimia.models.mixers import build_mixer, container_classes, mixer_spec, width_multiple, writes_memory
from qimia.models.registry import create_model, model_defaults, register_model


def default_layers(base: nn.Module) -> list[str]:
    """Modules to tap: the depth-mixing containers, else torchvision's ResNet blocks ``layerK.J``."""
    containers = [name for name, m in base.named_modules() if isinstance(m, container_classes())]
    if containers:
        return containers
    blocks = [name for name, _ in base.named_modules() if re.fullmatch(r"layer\d+\.\d+", name)]
    if blocks:
        return blocks
    raise ValueError(
        f"cannot find the blocks of {type(base).__name__}: pass tap_layers=[module names] (see base.named_modules())."
    )


def _as_features(output: Any) -> list[Tensor]:
    """A tapped module's output as feature tensors: all slots of a container, else the tensor."""
    if isinstance(output, DepthOutput):
        return list(output.values)
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(f"a tapped layer returned {type(output).__name__}; tap modules that return tensors.")
    return [output]


def pool_features(f: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C)`` by spatial mean; ``(B, T, D)`` -> ``(B, D)`` by mean over T; ``(B, D)`` kept."""
    if f.dim() == 4:
        return f.mean((2, 3))
    if f.dim() == 3:
        return f.mean(1)
    if f.dim() == 2:
        return f
    raise ValueError(f"cannot pool a feature of shape {tuple(f.shape)}.")


class _AllTapped(Exception):
    """Raised by the last hook to stop the base's forward pass once every tapped layer ran."""


class FeatureTap(nn.Module):
    """Collects the outputs of ``layers`` of ``base`` during one forward pass.

    Forward hooks are registered for the duration of one call only, so the base stays usable on
    its own (and copies of the model tap their own base). The pass stops as soon as every tapped
    layer has run, so the base's own classifier (or any later layer) costs nothing.
    """

    def __init__(self, base: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        modules = dict(base.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise ValueError(f"the base has no modules {missing}; see base.named_modules().")
        if not layers:
            raise ValueError("tap at least one layer of the base.")
        self.layers = list(layers)

    def forward(self, base: nn.Module, x: Tensor) -> list[Tensor]:
        """Run ``base`` on ``x``; its tapped per-block features in depth order."""
        features: list[list[Tensor] | None] = [None] * len(self.layers)

        def recorder(i: int):
            def record(module: nn.Module, args: tuple, output: Any) -> None:
                features[i] = _as_features(output)
                if all(f is not None for f in features):
                    raise _AllTapped

            return record

        handles = [base.get_submodule(name).register_forward_hook(recorder(i)) for i, name in enumerate(self.layers)]
        try:
            with contextlib.suppress(_AllTapped):  # stop the base once every tapped layer has run
                base(x)
        finally:
            for handle in handles:
                handle.remove()
        if any(f is None for f in features):
            raise RuntimeError("some tapped layers of the base did not run; check `layers`.")
        return [f for group in features for f in group]  # type: ignore[union-attr]


class FeatureMemory(nn.Module):
    """Projects ``N`` pooled base features into a QIMIA memory of ``dim``-vectors.

    Args:
        channels: feature sizes ``C_i`` of the ``N`` tapped features.
        dim: head width ``D``.
        heads, key_dim: the head container's key layout.
        all_slots: project every feature; else only the last one.
        with_keys: give the projected features keys (a QIMIA head's external memory).
        learned_keys: keys ``K_i v_i`` (QIMIA); else the values' own head features (the
            attention-residuals preset), RMS-normalised when ``normalize_keys``.
        normalize_keys: RMS-normalise the keys (no gain), as the head container does its own.
    """

    def __init__(
        self,
        channels: Sequence[int],
        dim: int,
        *,
        heads: int,
        key_dim: int,
        all_slots: bool,
        with_keys: bool,
        learned_keys: bool = True,
        normalize_keys: bool = False,
    ) -> None:
        super().__init__()
        used = list(channels) if all_slots else [channels[-1]]
        self.values = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, dim)) for c in used)
        self.keys = None
        if all_slots and with_keys and learned_keys:
            self.keys = nn.ModuleList(nn.Linear(dim, heads * key_dim, bias=False) for _ in used)
        self.key_norm = nn.RMSNorm(key_dim, eps=1e-6, elementwise_affine=False) if all_slots and with_keys and normalize_keys else None
        self.heads, self.key_dim, self.with_keys = heads, key_dim, all_slots and with_keys

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], DepthMemory | None]:
        """Features -> (projected values ``N x (B, D)`` (only the last one unless ``all_slots``),
        memory of all ``N`` slots for a QIMIA head or ``None``)."""
        used = features if len(self.values) == len(features) else features[-1:]
        values = [proj(pool_features(f)) for proj, f in zip(self.values, used)]  # N x (B, D)
        if not self.with_keys:
            return values, None
        if self.keys is not None:
            keys = [k(v).unflatten(-1, (self.heads, self.key_dim)) for k, v in zip(self.keys, values)]  # (B, H, d_k)
        else:  # the attention-residuals preset: keys = the values' head features
            keys = [v.unflatten(-1, (self.heads, self.key_dim)) for v in values]  # (B, 1, D)
        if self.key_norm is not None:
            keys = [self.key_norm(k) for k in keys]
        return values, DepthMemory(keys, values)


class MLPBranch(nn.Module):
    """``W_2 GELU(W_1 LayerNorm(u))``: ``(B, D) -> (B, D)``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))

    def forward(self, u: Tensor) -> Tensor:
        return self.net(u)


class TransferHead(RegistryModel):
    """A head on a base network's features: ``(base input) -> (B, num_classes)``.

    Args:
        base: the base network (its parameters are frozen when ``freeze_base``).
        example_input: one input of the base, used once to find the tapped feature sizes.
        num_classes: classes of the new task.
        dim: head width ``D``; ``depth``: number of head blocks (``0``: a linear probe).
        mixer: the head's depth mixer; mixers that write a depth memory (``qimia``, ``attnres``)
            read the base's whole depth, with keys in the head container's own key layout.
        granularity: of the QIMIA head; the head's items are ``(B, D)`` vectors with no position
            axes, so ``"layer"`` and ``"component"`` compute the same reads.
        tap_layers: base modules to tap (default :func:`default_layers`).
        freeze_base: keep the base fixed (no gradients, BatchNorm statistics in eval mode); when
            ``False`` (fine-tuning) the base trains, except for parameters the tapped features do
            not depend on (e.g. its classifier), which are frozen.
        features: the head's input ``u_0``: ``"last"`` (``v_N``) or ``"all"`` (``sum_i v_i``, a
            linear map of all tapped features concatenated: the all-layers control without attention).
    """

    task = "classification"
    width_knob = "dim"

    def __init__(
        self,
        base: nn.Module,
        example_input: Tensor,
        *,
        num_classes: int,
        dim: int = 128,
        depth: int = 2,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        mixer: str = "qimia",
        granularity: str = "layer",
        qimia_heads: int = 1,
        key_dim: int | None = 16,
        tap_layers: Sequence[str] | None = None,
        freeze_base: bool = True,
        features: str = "last",
    ) -> None:
        super().__init__()
        mixer_spec(mixer)  # an unknown mixer is a ValueError naming the registered ones
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}.")
        if depth == 0 and mixer != "residual":
            raise ValueError(f"depth=0 is a linear probe with no depth mixing; mixer must be 'residual', got {mixer!r}.")
        self.base, self.freeze_base = base, freeze_base
        self.width_multiple = width_multiple(mixer, qimia_heads)
        self.tap = FeatureTap(base, tap_layers if tap_layers is not None else default_layers(base))
        was_training = base.training
        base.eval()
        with torch.no_grad():
            channels = [pool_features(f).shape[-1] for f in self.tap(base, example_input[:1])]
        base.train(was_training)
        self._example = example_input[:1].detach().clone()
        self.num_features = len(channels)
        if features not in ("last", "all"):
            raise ValueError(f"features must be 'last' or 'all', got {features!r}.")
        reads_memory = writes_memory(mixer) and depth > 0
        self.features = features
        head_mixer = None
        if depth > 0:
            blocks = [MLPBranch(dim, int(mlp_ratio * dim), dropout) for _ in range(depth)]
            structural = {"detach_external": False} if reads_memory else {}
            head_mixer = build_mixer(mixer, blocks, dim, feature_dim=-1, granularity=granularity,
                                     qimia_heads=qimia_heads, key_dim=key_dim, **structural)
        # the base's slots get keys in the layout of the head container's own keys
        keys = dict(heads=head_mixer.heads, key_dim=head_mixer.key_dim,
                    learned_keys=head_mixer.key_projections is not None,
                    normalize_keys=head_mixer.key_norm is not None) if reads_memory else dict(heads=1, key_dim=dim)
        self.memory = FeatureMemory(channels, dim, all_slots=reads_memory or features == "all", with_keys=reads_memory,
                                    **keys)
        self.mixer = head_mixer
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        if freeze_base:
            base.requires_grad_(False)
            base.eval()
        else:  # parameters the tapped features do not depend on (past the last tap) cannot learn
            for p in base.parameters():
                p.grad = None
            base.eval()  # the probe must not move BatchNorm statistics
            sum(f.float().sum() for f in self.tap(base, example_input[:1])).backward()
            base.train(was_training)
            for p in base.parameters():
                if p.grad is None:
                    p.requires_grad_(False)
                p.grad = None

    def train(self, mode: bool = True) -> TransferHead:
        super().train(mode)
        if self.freeze_base:
            self.base.eval()  # frozen BatchNorm statistics
        return self

    def base_features(self, x: Tensor) -> list[Tensor]:
        """The base's tapped features on ``x`` (computed without autograd when frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_base):
            return self.tap(self.base, x)

    def classify(self, features: Sequence[Tensor]) -> Tensor:
        """Tapped base features -> logits ``(B, num_classes)``."""
        if len(features) != self.num_features:
            raise ValueError(f"expected {self.num_features} base features, got {len(features)}.")
        values, memory = self.memory(features)  # N x (B, D)
        # "all": sum_i W_i LN(pool(f_i)), a linear map of the concatenated features; "last": v_N.
        u = torch.stack(values).sum(0) if self.features == "all" else values[-1]  # (B, D)
        if self.mixer is not None:
            kwargs = {"external": memory} if memory is not None else {}
            u = self.mixer(u, return_attention=False, **kwargs).output  # (B, D)
        return self.fc(self.norm(u))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: the base's input -> logits ``(B, num_classes)``."""
        return self.classify(self.base_features(x))

    def example_input(self, batch_size: int = 2) -> Tensor:
        example = self._example.to(self.fc.weight.device)
        if example.is_floating_point():
            return torch.randn(batch_size, *example.shape[1:], device=example.device, dtype=example.dtype)
        return example.expand(batch_size, *example.shape[1:]).clone()


# ---------------------------------------------------------------------------------- building the base
def _load_state_dict(path: str) -> dict[str, Tensor]:
    """A ``state_dict`` file, or a (Lightning) checkpoint holding one under ``"state_dict"``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refused, missing file, corrupt archive
        raise ValueError(
            f"cannot read the base checkpoint {path!r} with torch.load(weights_only=True): {err}. Save the base "
            "with torch.save(model.state_dict(), path), or load a trusted checkpoint yourself and pass base=<module>."
        ) from err
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict.")
    return obj


def _strip_prefix(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Drop a wrapper prefix (e.g. Lightning's ``model.``) so the keys fit ``model``."""
    ours = set(model.state_dict())
    for key in state:
        if key in ours:
            return state
        for i in range(key.count(".")):
            prefix = ".".join(key.split(".")[: i + 1]) + "."
            if key[len(prefix):] in ours:
                return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def build_base(base: str | nn.Module, base_kwargs: dict | None, base_checkpoint: str | None,
               in_chans: int, image_size: int) -> tuple[nn.Module, Tensor]:
    """The base network and one example input for it."""
    if isinstance(base, nn.Module):
        model = base
    elif base.startswith("torchvision:"):
        import torchvision

        model = torchvision.models.get_model(base.split(":", 1)[1], weights=None, **(base_kwargs or {}))
    else:  # the data's channel count reaches the base unless base_kwargs says otherwise
        kwargs = dict(base_kwargs or {})
        if "in_chans" in model_defaults(base):
            kwargs.setdefault("in_chans", in_chans)
        model = create_model(base, **kwargs)
    if base_checkpoint is not None:
        state = _strip_prefix(_load_state_dict(base_checkpoint), model)
        model.load_state_dict(state)
    if isinstance(model, RegistryModel):
        example = model.example_input(1)
    else:
        example = torch.zeros(1, in_chans, image_size, image_size)
    return model, example


TINY_TRANSFER = dict(base_kwargs={"width": 4}, dim=16, key_dim=4)


@register_model("qimia_transfer_head", tiny=TINY_TRANSFER, defaults=dict(mixer="qimia"))
@register_model("transfer_head", tiny=TINY_TRANSFER)
@register_model("linear_probe", tiny=TINY_TRANSFER, defaults=dict(depth=0))
@register_model("concat_transfer_head", tiny=TINY_TRANSFER, defaults=dict(features="all"))
def transfer_head(
    *,
    base: str | nn.Module = "qimia_resnet20",
    base_kwargs: dict | None = None,
    base_checkpoint: str | None = None,
    num_classes: int = 10,
    in_chans: int = 3,
    image_size: int = 32,
    dim: int = 128,
    depth: int = 2,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
    mixer: str = "residual",
    granularity: str = "layer",
    qimia_heads: int = 1,
    key_dim: int | None = 16,
    tap_layers: Sequence[str] | None = None,
    freeze_base: bool = True,
    features: str = "last",
) -> TransferHead:
    """A head on ``base`` (registry name, ``"torchvision:<name>"`` or a module); see the module docstring.

    ``in_chans`` is passed on to a registry base (unless ``base_kwargs`` sets it); with
    ``image_size`` it also shapes the probe input of a torchvision base.
    """
    model, example = build_base(base, base_kwargs, base_checkpoint, in_chans, image_size)
    if freeze_base and base_checkpoint is None and isinstance(base, str):
        warnings.warn(
            f"transfer head on a frozen base {base!r} without base_checkpoint: the base keeps its random "
            "initialisation. Pass base_checkpoint=<trained weights> for transfer learning.",
            stacklevel=3,  # the caller of create_model
        )
    return TransferHead(
        model, example, num_classes=num_classes, dim=dim, depth=depth, mlp_ratio=mlp_ratio, dropout=dropout,
        mixer=mixer, granularity=granularity, qimia_heads=qimia_heads, key_dim=key_dim, tap_layers=tap_layers,
        freeze_base=freeze_base,
        features=features,
    )
