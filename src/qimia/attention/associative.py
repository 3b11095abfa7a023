"""Associative (soft) attention over data and over memory.

Over **data** (a set of ``T`` items ``v_j`` with keys ``k_j``), a query ``q`` reads the convex
combination ``c = sum_j alpha_j v_j`` with ``alpha = softmax(e)`` and scores

* additive (Bahdanau, Cho & Bengio, 2015): ``e_j = w^T tanh(W_q q + W_k k_j)``;
* dot product (Luong et al., 2015; scaled as in Vaswani et al., 2017): ``e_j = q . k_j / sqrt(d)``.

Over **memory** (rows ``M[i]`` of a ``(B, N, W)`` memory), the query is mapped to a key ``k``
and strength ``beta`` and reads by content as an NTM head does:
``w = softmax(beta S(k, M[i]))``, ``r = sum_i w[i] M[i]`` (cosine similarity ``S``).

All return the read vector and the weights, so a model can show where it looked.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.addressing import content_weighting


def _masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


class AdditiveAttention(nn.Module):
    """Bahdanau attention. Args: query_size, key_size, hidden (size of ``w``)."""

    def __init__(self, query_size: int, key_size: int, hidden: int):
        super().__init__()
        self.w_q, self.w_k = nn.Linear(query_size, hidden, bias=False), nn.Linear(key_size, hidden)
        self.w = nn.Linear(hidden, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Args: query ``(B, Dq)``; keys ``(B, T, Dk)``; values ``(B, T, Dv)``; mask ``(B, T)`` True = attend.

        Returns: context ``(B, Dv)`` and weights ``(B, T)``.
        """
        scores = self.w(torch.tanh(self.w_q(query).unsqueeze(1) + self.w_k(keys))).squeeze(-1)  # (B, T)
        alpha = _masked_softmax(scores, mask)
        return (alpha.unsqueeze(1) @ values).squeeze(1), alpha


class DotProductAttention(nn.Module):
    """Scaled dot-product attention of one query over data (no parameters)."""

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Args: query ``(B, D)``; keys ``(B, T, D)``; values ``(B, T, Dv)``. Returns ``(B, Dv)``, ``(B, T)``."""
        scores = (keys @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(query.shape[-1])  # (B, T)
        alpha = _masked_softmax(scores, mask)
        return (alpha.unsqueeze(1) @ values).squeeze(1), alpha


class MemoryAttention(nn.Module):
    """Content-based read of ``H`` heads from a memory: ``r_h = sum_i softmax(beta_h S(k_h, M[i])) M[i]``.

    Args: query_size; word_size ``W``; heads ``H``.
    """

    def __init__(self, query_size: int, word_size: int, heads: int = 1):
        super().__init__()
        self.heads, self.word_size = heads, word_size
        self.proj = nn.Linear(query_size, heads * (word_size + 1))

    def forward(self, query: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Args: query ``(B, Dq)``; memory ``(B, N, W)``. Returns reads ``(B, H, W)`` and weights ``(B, H, N)``."""
        p = self.proj(query).view(query.shape[0], self.heads, self.word_size + 1)  # (B, H, W + 1)
        keys, beta = p[..., :-1], F.softplus(p[..., -1])
        w = content_weighting(memory, keys, beta)
        return w @ memory, w
