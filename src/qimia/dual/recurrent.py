r"""``nn.LSTM`` in dual form: each layer's two weight matrices are recorded linear maps.

Layer ``k`` of an ``nn.LSTM`` computes, at every time step (PyTorch's gate order ``i, f, g, o``)::

    z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh                         (4H,)
    c_t = sigma(z_f) * c_{t-1} + sigma(z_i) * tanh(z_g),   h_t = sigma(z_o) * tanh(c_t)

Both products are linear in their weights and share the output gradient ``e_t = dL/dz_t``, so
SGD makes ``W_ih`` a memory with keys ``x_t`` and ``W_hh`` one with keys ``h_{t-1}``, both with
values ``e_t`` (Irie, Csordás, Schmidhuber 2022, "The Dual Form of Neural Networks Revisited",
whose language model is an LSTM). Each layer gives two recorded *views*, named
``<module>.ih_l<k>`` and ``<module>.hh_l<k>`` after the parameters they own.

The fused kernel (ATen / cuDNN) runs all steps in one call, so no hook sees ``h_{t-1}`` or
``z_t``. While a view is recorded or queried, the module runs :func:`unrolled_lstm` instead: the
same equations with the module's own parameters, one step at a time. Its outputs equal the fused
kernel's up to float rounding, and its gradients are the ones the optimizer applies, so the
recorded memory is exact. Bidirectional and projected (``proj_size > 0``) LSTMs are refused by name.
"""

from __future__ import annotations

import re
import types
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from qimia.dual.errors import DualFormError
from qimia.dual.store import LayerSpec

VIEW = re.compile(r"(?P<part>ih|hh)_l(?P<layer>\d+)")

# tap(layer, x (B, T, I), h_prev (B, T, H), z_x (B, T, 4H)): the keys of W_ih and W_hh, and the
# input product, whose gradient is e_t = dL/dz_t for both.
Tap = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def lstm_refusal(lstm: nn.LSTM) -> str | None:
    """Why an ``nn.LSTM`` has no recorded dual form here (None if it has one)."""
    if lstm.bidirectional:
        return ("bidirectional=True: record a forward and a backward nn.LSTM as two modules (the reverse "
                "direction's keys are its own h_{t+1})")
    if lstm.proj_size > 0:
        return f"proj_size={lstm.proj_size}: the projected hidden state is not recorded; use proj_size=0"
    if not all(p.requires_grad for p in lstm.parameters()):
        return "some of its parameters are frozen; record it with every weight and bias trained, or not at all"
    if any(not isinstance(p, nn.Parameter) for p in (getattr(lstm, n) for n in lstm._flat_weights_names)):
        return "its weights are computed from other parameters (a parametrization); record it without one"
    return None


def view_name(module: str, part: str, layer: int) -> str:
    """``<module>.<part>_l<layer>`` (``<part>_l<layer>`` for the model itself)."""
    return f"{module}.{part}_l{layer}" if module else f"{part}_l{layer}"


def view_names(name: str, lstm: nn.LSTM) -> list[str]:
    """The recorded views of ``lstm`` (module ``name``), input product first, layer by layer."""
    return [view_name(name, part, k) for k in range(lstm.num_layers) for part in ("ih", "hh")]


def split_view(name: str) -> tuple[str, str, int] | None:
    """``(module, "ih" | "hh", layer)`` of a view name, or None for any other name."""
    module, _, last = name.rpartition(".")
    match = VIEW.fullmatch(last)
    return (module, match["part"], int(match["layer"])) if match else None


def view_spec(name: str, index: int, lstm: nn.LSTM, param_names: dict[int, str]) -> LayerSpec:
    """The :class:`LayerSpec` of view ``<module>.<part>_l<k>``: a linear map of its keys."""
    _, part, k = split_view(name)
    weight, bias = getattr(lstm, f"weight_{part}_l{k}"), getattr(lstm, f"bias_{part}_l{k}", None)
    return LayerSpec(name=name, index=index, d_key=int(weight.shape[1]), d_value=int(weight.shape[0]),
                     weight=param_names[id(weight)], bias=param_names[id(bias)] if bias is not None else None,
                     kind="linear", weight_shape=tuple(weight.shape))


def unrolled_lstm(lstm: nn.LSTM, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None,
                  tap: Tap | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``lstm(input, hx)`` one step at a time with ``lstm``'s parameters; ``tap`` sees every layer's keys.

    Same inputs and outputs as ``nn.LSTM.forward`` (batched or unbatched, ``batch_first`` either
    way, dropout between layers in training mode); packed sequences are refused.
    """
    if isinstance(input, PackedSequence):
        raise DualFormError("a recorded nn.LSTM got a PackedSequence: pad the batch instead (the padded steps' "
                            "keys are recorded like any other) or record a model without packing.")
    if refusal := lstm_refusal(lstm):
        raise DualFormError(f"this nn.LSTM cannot run in dual form: {refusal}.")
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(0 if lstm.batch_first else 1)
    x = x if lstm.batch_first else x.transpose(0, 1)                                # (B, T, I)
    B, T, H = x.shape[0], x.shape[1], lstm.hidden_size
    if hx is None:
        h0 = c0 = x.new_zeros(lstm.num_layers, B, H)                                 # (L, B, H)
    else:
        h0, c0 = (s if batched else s.unsqueeze(1) for s in hx)
    h_last, c_last = [], []
    for k in range(lstm.num_layers):
        w_hh, b_hh = getattr(lstm, f"weight_hh_l{k}"), getattr(lstm, f"bias_hh_l{k}", None)
        z_x = F.linear(x, getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"bias_ih_l{k}", None))  # (B, T, 4H)
        h, c, previous, outputs = h0[k], c0[k], [], []
        for t in range(T):
            previous.append(h)
            i, f, g, o = (z_x[:, t] + F.linear(h, w_hh, b_hh)).chunk(4, -1)        # 4 x (B, H)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        if tap is not None:
            tap(k, x, torch.stack(previous, 1), z_x)                                # keys (B, T, I), (B, T, H)
        x = torch.stack(outputs, 1)                                                 # (B, T, H)
        if k < lstm.num_layers - 1 and lstm.dropout > 0:
            x = F.dropout(x, lstm.dropout, lstm.training)
        h_last.append(h)
        c_last.append(c)
    out = x if lstm.batch_first else x.transpose(0, 1)
    h_n, c_n = torch.stack(h_last), torch.stack(c_last)                            # (L, B, H)
    if not batched:
        out, h_n, c_n = out.squeeze(0 if lstm.batch_first else 1), h_n.squeeze(1), c_n.squeeze(1)
    return out, (h_n, c_n)


# Taps of each watched LSTM: (tap, active). The module's forward is replaced while it has any.
_TAPS: weakref.WeakKeyDictionary[nn.LSTM, list[tuple[Tap, Callable[[], bool]]]] = weakref.WeakKeyDictionary()


def add_tap(lstm: nn.LSTM, tap: Tap, active: Callable[[], bool]) -> None:
    """Run ``lstm`` unrolled, calling ``tap``, whenever ``active()`` (several taps may watch one LSTM)."""
    if refusal := lstm_refusal(lstm):
        raise DualFormError(f"this nn.LSTM cannot run in dual form: {refusal}.")
    taps = _TAPS.setdefault(lstm, [])
    if not taps:  # an instance attribute: nn.Module.__call__ runs it, hooks included (a copy gets its own)
        lstm.forward = types.MethodType(_watched_forward, lstm)
    taps.append((tap, active))


def _watched_forward(lstm: nn.LSTM, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The forward of a watched LSTM: unrolled for its active taps, fused when none is active."""
    live = [tap for tap, on in _TAPS.get(lstm, []) if on()]
    if not live:
        return nn.LSTM.forward(lstm, input, hx)

    def tap_all(k: int, x: torch.Tensor, h_prev: torch.Tensor, z_x: torch.Tensor) -> None:
        for tap in live:
            tap(k, x, h_prev, z_x)

    return unrolled_lstm(lstm, input, hx, tap_all)


def remove_tap(lstm: nn.LSTM, tap: Tap) -> None:
    """Undo :func:`add_tap`; the fused forward is back once the last tap is gone."""
    taps = _TAPS.get(lstm, [])
    taps[:] = [(t, on) for t, on in taps if t is not tap]
    if not taps and "forward" in vars(lstm):
        del lstm.forward
