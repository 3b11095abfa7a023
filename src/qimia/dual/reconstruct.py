r"""Rebuild trained weights from ``W_0`` and the memory, and run a layer in its dual form.

Irie, Csordás, Schmidhuber (2022), "The Dual Form of Neural Networks Revisited". ``W`` is the
layer's dual matrix ``(d_value, d_key)`` (:mod:`qimia.dual.layers`: a Linear's weight, a
convolution's weight flattened per output channel, an embedding's weight transposed). With
per-slot coefficients ``c_i`` (weight) and ``c^b_i`` (bias) from :mod:`qimia.dual.optim_coeffs`
and values ``e_i = dL/dy_i``::

    W_T = a_W W_0 + sum_i c_i e_i x_i^T           (primal weights)
    b_T = a_b b_0 + sum_i c^b_i e_i                (the bias is a constant-1 key)
    y   = W_T x + b_T
        = a_W W_0 x + a_b b_0 + sum_i e_i (c_i (x_i . x) + c^b_i)   (dual form: attention)

``keep`` masks (boolean ``(N,)`` over a layer's slots) drop slots from the sum, keeping the
coefficients of the recorded run (momentum tails and the weight-decay shrink of later steps
included). This removes the dropped slots' terms from the recorded run's weights; it is not
retraining without them, because every later value ``e_t`` was computed with weights that
contained them. The two coincide only when the kept slots are a leading block of steps (all
slots of steps ``t < t0``) under plain SGD (no momentum, no weight decay): then the masked
weights are exactly the weights after step ``t0``. Everything streams the store in blocks of
``chunk_rows`` slots.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qimia.dual import layers as L
from qimia.dual.errors import StoreError
from qimia.dual.optim_coeffs import param_coefficients
from qimia.dual.store import STEP, DualStore, iter_chunks, to_tensor

Keep = np.ndarray | Callable[[np.ndarray], np.ndarray] | None


@dataclass(frozen=True)
class LayerCoefficients:
    """Dual-form coefficients of one layer.

    Attributes:
        a_w: scale of ``W_0`` (``prod (1 - eta_t lambda)`` for plain SGD with weight decay).
        a_b: scale of ``b_0``.
        c_w: ``(N,)`` float64 per-slot weight coefficients ``c_i``.
        c_b: ``(N,)`` float64 per-slot bias coefficients ``c^b_i`` (zeros without bias).
    """

    a_w: float
    a_b: float
    c_w: np.ndarray
    c_b: np.ndarray


def layer_coefficients(store: DualStore, layer: str | int) -> LayerCoefficients:
    """Exact coefficients for every slot of ``layer`` (refuses keys-only stores)."""
    if store.keys_only:
        raise StoreError("this store was recorded in keys-only mode (approximate): it has no values e_t and "
                         "no exact coefficients, so weights cannot be reconstructed. Record with SGD.")
    spec = store.layer(layer)
    steps = store.meta(spec.name)[:, STEP]
    cw = param_coefficients(store.steps, spec.weight)
    if spec.bias is None:
        return LayerCoefficients(cw.a0, 0.0, cw.alpha[steps], np.zeros(len(steps)))
    cb = param_coefficients(store.steps, spec.bias)
    return LayerCoefficients(cw.a0, cb.a0, cw.alpha[steps], cb.alpha[steps])


def resolve_keep(store: DualStore, layer: str | int, keep: Keep) -> np.ndarray | None:
    """Turn ``keep`` (bool array, or a function of the ``(N, 6)`` metadata) into a bool ``(N,)`` array."""
    if keep is None:
        return None
    meta = store.meta(layer)
    mask = np.asarray(keep(meta) if callable(keep) else keep, dtype=bool)
    if mask.shape != (meta.shape[0],):
        raise ValueError(f"keep mask has shape {mask.shape}; layer {store.layer(layer).name} has "
                         f"{meta.shape[0]} slots, expected ({meta.shape[0]},).")
    return mask


def reconstruct_layer(store: DualStore, layer: str | int, *, keep: Keep = None,
                      dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
                      chunk_rows: int = 65536) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``W_T`` in the weight parameter's shape and ``b_T`` ``(d_value,)`` from ``W_0`` and the memory.

    Only the ``keep`` slots are summed. For a Linear ``W_T`` is ``(d_value, d_key)``; for a
    convolution ``(out, C, *k)``; for an embedding ``(V, D)``.
    """
    spec = store.layer(layer)
    co = layer_coefficients(store, spec.name)
    mask = resolve_keep(store, spec.name, keep)
    w0 = store.w0()
    W = co.a_w * L.from_param(spec, w0[spec.weight]).to(device, dtype)                # (d_value, d_key)
    b = co.a_b * w0[spec.bias].to(device, dtype) if spec.bias is not None else None  # (d_value,)
    for off, shard, lo, hi in iter_chunks(store, spec.name, chunk_rows):
        X = L.load_keys(spec, shard.keys[lo:hi], device, dtype)                      # (n, d_key) or (n, 1) ids
        E = to_tensor(shard.values[lo:hi], device, dtype)      # (n, d_value)
        cw = torch.from_numpy(co.c_w[off:off + hi - lo]).to(device, dtype)           # (n,)
        cb = torch.from_numpy(co.c_b[off:off + hi - lo]).to(device, dtype)           # (n,)
        if mask is not None:
            m = torch.from_numpy(mask[off:off + hi - lo]).to(device, dtype)
            cw, cb = cw * m, cb * m
        L.add_outer(spec, W, E * cw[:, None], X)                                     # W += (c E)^T X
        if b is not None:
            b += cb @ E
    return L.to_param(spec, W).contiguous(), b


def reconstruct_model(store: DualStore, model: nn.Module, *, keep: Keep = None,
                      dtype: torch.dtype = torch.float64, chunk_rows: int = 65536) -> nn.Module:
    """A deep copy of ``model`` whose recorded layers hold the reconstructed (optionally masked) weights."""
    out = copy.deepcopy(model)
    params = dict(out.named_parameters())
    for name in store.layer_names:
        spec = store.layer(name)
        weight = params[spec.weight]
        W, b = reconstruct_layer(store, name, keep=keep, dtype=dtype, device=weight.device, chunk_rows=chunk_rows)
        with torch.no_grad():
            weight.copy_(W.to(weight.dtype))
            if b is not None:
                params[spec.bias].copy_(b.to(params[spec.bias].dtype))
    return out


def dual_forward(store: DualStore, layer: str | int, x: torch.Tensor, *, keep: Keep = None,
                 chunk_rows: int = 65536) -> torch.Tensor:
    """The layer's output computed as attention over the memory, never forming ``W_T``.

    Args:
        x: ``(M, d_key)`` queries (a convolution's input patches, an embedding's one-hot tokens: see
            :func:`qimia.dual.explain.layer_inputs`); dtype and device of the computation are taken from ``x``.

    Returns:
        ``(M, d_value)``: ``a_W W_0 x + a_b b_0 + sum_i e_i (c_i (x_i . x) + c^b_i)``.
    """
    spec = store.layer(layer)
    if x.ndim != 2 or x.shape[1] != spec.d_key:
        raise ValueError(f"x must have shape (M, {spec.d_key}) for layer {spec.name}, got {tuple(x.shape)}.")
    co = layer_coefficients(store, spec.name)
    mask = resolve_keep(store, spec.name, keep)
    w0 = store.w0()
    dev, dt = x.device, x.dtype
    y = co.a_w * x @ L.from_param(spec, w0[spec.weight]).to(dev, dt).T              # (M, d_value)
    if spec.bias is not None:
        y = y + co.a_b * w0[spec.bias].to(dev, dt)
    for off, shard, lo, hi in iter_chunks(store, spec.name, chunk_rows):
        X = L.load_keys(spec, shard.keys[lo:hi], dev, dt)      # (n, d_key) or (n, 1) ids
        E = to_tensor(shard.values[lo:hi], dev, dt)            # (n, d_value)
        cw = torch.from_numpy(co.c_w[off:off + hi - lo]).to(dev, dt)
        cb = torch.from_numpy(co.c_b[off:off + hi - lo]).to(dev, dt)
        if mask is not None:
            m = torch.from_numpy(mask[off:off + hi - lo]).to(dev, dt)
            cw, cb = cw * m, cb * m
        attn = L.key_dot(spec, x, X) * cw + cb                                       # (M, n) attention weights
        y = y + attn @ E                                                             # (M, d_value)
    return y
