"""Scaled dot-product attention written out, the readable twin of ``F.scaled_dot_product_attention``.

Shared by every attention module in the library (``qimia.layers.transformer_block``,
``qimia.attention.transformer``), each of which keeps the fused SDPA path beside this one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def manual_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout: float = 0.0,
                     training: bool = False) -> tuple[Tensor, Tensor]:
    """``softmax(Q K^T / sqrt(d_k)) V``.

    Args:
        q: ``(B, h, T_q, d_k)``; k: ``(B, h, T_k, d_k)``; v: ``(B, h, T_k, d_v)``.
        mask: boolean, ``True`` where attention is allowed, broadcastable to ``(B, h, T_q, T_k)``.

    Returns:
        output ``(B, h, T_q, d_v)`` and weights ``(B, h, T_q, T_k)``.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout > 0 and training:
        weights = F.dropout(weights, dropout)
    return weights @ v, weights


def causal_mask(size: int, device: torch.device | None = None) -> Tensor:
    """``(T, T)`` lower-triangular boolean mask: position ``i`` sees ``j <= i``."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()
