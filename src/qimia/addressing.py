"""Content and location addressing: the attention primitives shared by :mod:`qimia.memory` (NTM,
DNC) and :mod:`qimia.attention` (content attention over a memory). Depends on torch only.

A weighting ``w`` is a distribution over the ``N`` rows of a memory ``M`` of shape ``(B, N, W)``.
Every function here works on weightings of shape ``(..., N)``, so the same code serves one head
``(B, N)`` or several ``(B, H, N)``.

The NTM addressing pipeline (Graves, Wayne & Danihelka, 2014, sec. 3.3), for each head at time ``t``::

    w_c = softmax(beta * S(k, M))                         # content addressing, eq. (5)
    w_g = g * w_c + (1 - g) * w_{t-1}                     # interpolation, eq. (7)
    w~[i] = sum_j w_g[(i - (j - K)) mod N] * s[j]        # circular shift, eq. (8)
    w[i] = w~[i]^gamma / sum_j w~[j]^gamma                # sharpening, eq. (9)

Shift-index convention (tested in ``tests/memory/test_addressing.py``): a shift kernel ``s`` has
``2K + 1`` entries and entry ``j`` is the probability of moving the focus by ``j - K`` rows. So
with ``K = 1``: ``s = [1, 0, 0]`` moves weight from row ``i`` to row ``i - 1`` (backwards),
``[0, 1, 0]`` keeps it, and ``[0, 0, 1]`` moves it to ``i + 1`` (forwards), wrapping around the
ends of the memory.

An infinite key strength ``beta`` or sharpening exponent ``gamma`` gives the limit of the softmax
(all weight on the best rows, exact ties sharing it), never NaN: see :func:`tempered_softmax`.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6
MAX_SCALE = 1e6  # key strengths and sharpening exponents above this are the hard limit (see tempered_softmax)


def safe_norm(x: Tensor, dim: int = -1, eps: float = EPS) -> Tensor:
    """``sqrt(sum x^2 + eps)``: a norm whose gradient is finite at ``x = 0``."""
    return torch.sqrt((x * x).sum(dim) + eps)


def cosine_similarity(keys: Tensor, memory: Tensor) -> Tensor:
    """Cosine similarity ``S(k, M[i]) = k . M[i] / (|k| |M[i]|)`` of each key to each row.

    Args:
        keys: ``(B, H, W)`` one key per head.
        memory: ``(B, N, W)``.

    Returns:
        ``(B, H, N)`` similarities in ``[-1, 1]``; finite (and with finite gradients) on zero
        keys or zero memory thanks to :func:`safe_norm`.
    """
    dots = keys @ memory.transpose(1, 2)  # (B, H, N)
    norms = safe_norm(keys).unsqueeze(-1) * safe_norm(memory).unsqueeze(-2)  # (B, H, 1) * (B, 1, N)
    return dots / norms


def tempered_softmax(scores: Tensor, scale: Tensor) -> Tensor:
    """``softmax(scale * scores)`` over the last dim, finite for ``scale = +inf``.

    ``scale`` is capped at :data:`MAX_SCALE` (one ``clamp``, no extra pass): above it the float32
    softmax is already one-hot except between scores less than ``~1e-5`` apart, so ``+inf``
    gives the limit ``scale -> inf`` (all weight on the maximal scores, exact ties sharing it)
    instead of NaN, and no gradient reaches an infinite scale.

    Args:
        scores: ``(..., N)``.
        scale: ``(...)``, ``>= 0``.

    Returns:
        ``(..., N)`` weightings summing to 1.
    """
    return torch.softmax(scale.clamp(max=MAX_SCALE).unsqueeze(-1) * scores, dim=-1)


def content_weighting(memory: Tensor, keys: Tensor, strengths: Tensor) -> Tensor:
    """Content addressing, NTM eq. (5): ``w[i] = exp(beta S(k, M[i])) / sum_j exp(beta S(k, M[j]))``.

    Args:
        memory: ``(B, N, W)``.
        keys: ``(B, H, W)`` lookup keys ``k``.
        strengths: ``(B, H)`` key strengths ``beta >= 0`` (``+inf``: the best-matching rows).

    Returns:
        ``(B, H, N)`` weightings, each summing to 1 over ``N``.
    """
    return tempered_softmax(cosine_similarity(keys, memory), strengths)


def interpolate(content: Tensor, previous: Tensor, gate: Tensor) -> Tensor:
    """Interpolation gate, NTM eq. (7): ``w_g = g w_c + (1 - g) w_{t-1}``.

    Args:
        content: ``(..., N)`` content weighting ``w_c``.
        previous: ``(..., N)`` previous weighting ``w_{t-1}``.
        gate: ``(...)`` interpolation gate ``g`` in ``[0, 1]``.
    """
    gate = gate.unsqueeze(-1)  # (..., 1)
    return gate * content + (1.0 - gate) * previous


def circular_shift(weights: Tensor, kernel: Tensor) -> Tensor:
    """Circular convolution with a shift kernel, NTM eq. (8).

    ``out[i] = sum_j weights[(i - (j - K)) mod N] * kernel[j]``: kernel entry ``j`` moves weight
    by ``j - K`` rows (see the module docstring for the convention).

    Args:
        weights: ``(..., N)``.
        kernel: ``(..., 2K + 1)`` shift distribution ``s``.

    Returns:
        ``(..., N)``. The loop runs over the ``2K + 1`` offsets, never over the batch.
    """
    size = kernel.shape[-1]
    if size % 2 != 1:
        raise ValueError(f"shift kernel must have an odd size 2K+1, got {size}")
    half = size // 2
    if size > weights.shape[-1]:
        raise ValueError(f"shift kernel of size {size} is wider than the memory ({weights.shape[-1]} rows)")
    out = torch.zeros_like(weights)
    for j in range(size):
        # torch.roll moves element i to i + shift, i.e. a shift by j - K rows
        out = out + torch.roll(weights, shifts=j - half, dims=-1) * kernel[..., j : j + 1]
    return out


def sharpen(weights: Tensor, gamma: Tensor, eps: float = EPS) -> Tensor:
    """Sharpening, NTM eq. (9): ``w[i] = w~[i]^gamma / sum_j w~[j]^gamma``.

    Computed as ``softmax(gamma * log(w~ + eps))``, which is the same distribution but has finite
    gradients w.r.t. ``gamma`` where ``w~[i] = 0``.

    Args:
        weights: ``(..., N)`` shifted weighting ``w~``.
        gamma: ``(...)`` sharpening exponent ``gamma >= 1`` (``+inf``: the largest entries).
    """
    return tempered_softmax(torch.log(weights + eps), gamma)


def ntm_address(
    memory: Tensor,
    previous: Tensor,
    keys: Tensor,
    strengths: Tensor,
    gates: Tensor,
    shifts: Tensor,
    gammas: Tensor,
) -> Tensor:
    """The full NTM addressing pipeline (content -> interpolate -> shift -> sharpen).

    Args:
        memory: ``(B, N, W)``.
        previous: ``(B, H, N)`` weightings at ``t - 1``.
        keys: ``(B, H, W)``; strengths, gates, gammas: ``(B, H)``; shifts: ``(B, H, 2K+1)``.

    Returns:
        ``(B, H, N)`` new weightings.
    """
    w = content_weighting(memory, keys, strengths)
    w = interpolate(w, previous, gates)
    w = circular_shift(w, shifts)
    return sharpen(w, gammas)
