"""``mixer="rezero"``: ReZero (Bachlechner et al., 2021, "ReZero is All You Need: Fast Convergence at
Large Depth"), a residual stream whose every branch is gated by a learned scalar that starts at 0:

    x_l = x_{l-1} + alpha_l f_l(x_{l-1}),        alpha_l = 0 at initialisation

so the network starts as the identity and each block's contribution is learned. This file is the
whole mixer (container and spec): the worked example of adding one (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from qimia.layers import DepthOutput
from qimia.layers.feature_layout import same_shape_or_raise
from qimia.models.mixers.spec import MixerSpec, register_mixer


class ReZeroStack(nn.Module):
    """``x_l = x_{l-1} + alpha_l f_l(x_{l-1})`` over shape-preserving blocks, ``alpha`` ``(L,)`` zero-initialised.

    Args:
        blocks: residual branches ``f_l``; the same module may repeat (shared weights, one
            ``alpha_l`` per depth).
    """

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("ReZeroStack needs at least one block.")
        self.blocks = nn.ModuleList(blocks)
        self.alpha = nn.Parameter(torch.zeros(len(blocks)))

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor, *, return_attention: bool = False) -> DepthOutput:
        """``x``: any shape the blocks take -> :class:`DepthOutput` whose ``values`` are the
        stream ``x_0 .. x_L`` (no keys, no attention)."""
        stream = [x]
        for layer, block in enumerate(self.blocks):
            update = block(x)
            same_shape_or_raise(x, update, f"block {layer + 1} ({type(block).__name__})")
            x = x + self.alpha[layer].to(update.dtype) * update
            stream.append(x)
        return DepthOutput(x, None, stream, None)


def build(blocks: list[nn.Module], dim: int, *, feature_dim: int) -> ReZeroStack:
    return ReZeroStack(blocks)


SPEC = register_mixer(MixerSpec(
    "rezero", ReZeroStack, build,
    no_decay=("alpha",),  # decay would pull every gate back to "block off"
    extra_parameters=("alpha",),
))
