"""Read and write heads (Graves et al., 2014, sec. 3.1-3.2).

Reading, eq. (2): ``r = sum_i w[i] M[i]``.
Writing is erase then add, eqs. (3)-(4)::

    M~[i] = M[i] (1 - w[i] e)      # erase vector e in [0, 1]^W
    M[i]  = M~[i] + w[i] a         # add vector a

With several write heads the erasures multiply and the adds sum, so the order of the
heads does not matter (paper, sec. 3.2).

:class:`NTMHeadParams` maps a controller output to every head's addressing parameters in
one ``nn.Linear`` (vectorised over heads).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def read_memory(memory: Tensor, weights: Tensor) -> Tensor:
    """``r = sum_i w[i] M[i]`` for each head.

    Args:
        memory: ``(B, N, W)``.
        weights: ``(B, H, N)``.

    Returns:
        ``(B, H, W)`` read vectors.
    """
    return weights @ memory


def write_memory(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    """Erase then add: ``M[i] <- M[i] prod_h (1 - w_h[i] e_h) + sum_h w_h[i] a_h``.

    Args:
        memory: ``(B, N, W)``.
        weights: ``(B, H, N)`` write weightings.
        erase: ``(B, H, W)`` erase vectors in ``[0, 1]``.
        add: ``(B, H, W)`` add vectors.

    Returns:
        ``(B, N, W)`` the new memory.
    """
    keep = 1.0 - weights.unsqueeze(-1) * erase.unsqueeze(-2)  # (B, H, N, W)
    added = weights.transpose(1, 2) @ add  # (B, N, H) @ (B, H, W) -> (B, N, W)
    return memory * keep.prod(dim=1) + added


class HeadParams(NamedTuple):
    """Addressing parameters of ``H`` heads (NTM sec. 3.3).

    Attributes:
        keys: ``(B, H, W)`` content keys ``k``.
        strengths: ``(B, H)`` key strengths ``beta = softplus(.)``.
        gates: ``(B, H)`` interpolation gates ``g = sigmoid(.)``.
        shifts: ``(B, H, 2K+1)`` shift kernels ``s = softmax(.)``.
        gammas: ``(B, H)`` sharpening ``gamma = 1 + softplus(.)``.
        erase: ``(B, H, W)`` erase vectors ``e = sigmoid(.)`` (write heads only, else None).
        add: ``(B, H, W)`` add vectors ``a = tanh(.)``, or the linear output (write heads only, else None).
    """

    keys: Tensor
    strengths: Tensor
    gates: Tensor
    shifts: Tensor
    gammas: Tensor
    erase: Tensor | None = None
    add: Tensor | None = None


class NTMHeadParams(nn.Module):
    """One linear layer emitting the addressing parameters of ``num_heads`` heads.

    Args:
        input_size: controller output size.
        num_heads: number of heads ``H``.
        word_size: memory word size ``W``.
        shift_range: ``K``; kernels have ``2K + 1`` entries.
        write: also emit erase and add vectors.
        add_activation: ``"tanh"`` (add vectors in ``[-1, 1]``) or ``"linear"`` (unbounded, as in
            loudinthecloud/pytorch-ntm).
    """

    def __init__(self, input_size: int, num_heads: int, word_size: int, shift_range: int = 1, write: bool = False,
                 add_activation: str = "tanh"):
        super().__init__()
        if add_activation not in ("tanh", "linear"):
            raise ValueError(f"add_activation must be 'tanh' or 'linear', got {add_activation!r}.")
        self.num_heads, self.word_size, self.write = num_heads, word_size, write
        self.add_activation = add_activation
        self.shift_size = 2 * shift_range + 1
        self.per_head = word_size + 3 + self.shift_size + (2 * word_size if write else 0)
        self.proj = nn.Linear(input_size, num_heads * self.per_head)

    def forward(self, h: Tensor) -> HeadParams:
        """Args: h: ``(B, input_size)``. Returns: :class:`HeadParams` for ``H`` heads."""
        p = self.proj(h).view(h.shape[0], self.num_heads, self.per_head)  # (B, H, P)
        sizes = [self.word_size, 1, 1, self.shift_size, 1] + ([self.word_size] * 2 if self.write else [])
        parts = torch.split(p, sizes, dim=-1)
        key, beta, gate, shift, gamma = parts[:5]
        return HeadParams(
            keys=key,
            strengths=F.softplus(beta.squeeze(-1)),
            gates=torch.sigmoid(gate.squeeze(-1)),
            shifts=torch.softmax(shift, dim=-1),
            gammas=1.0 + F.softplus(gamma.squeeze(-1)),
            erase=torch.sigmoid(parts[5]) if self.write else None,
            add=(torch.tanh(parts[6]) if self.add_activation == "tanh" else parts[6]) if self.write else None,
        )
