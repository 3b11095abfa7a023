"""Normalisation layers shared by the depth-mixing containers and the models."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension (Zhang & Sennrich, 2019).

    ``y = x / sqrt(mean(x^2) + eps) * g``, with a learned gain ``g`` when ``affine``.

    Args:
        dim: size of the last dimension.
        eps: added to the mean square for stability (also makes an all-zero input map to zero).
        affine: learn a per-feature gain initialised to one.
    """

    def __init__(self, dim: int, *, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(..., dim)`` -> ``(..., dim)``."""
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y if self.weight is None else y * self.weight
