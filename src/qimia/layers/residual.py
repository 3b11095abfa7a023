"""The residual baseline: the same blocks, summed into a stream."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from qimia.layers.depth_output import DepthOutput
from qimia.layers.feature_layout import same_shape_or_raise


class ResidualStack(nn.Module):
    """``x_l = x_{l-1} + f_l(x_{l-1})`` over shape-preserving blocks ``f_l``.

    Pre-norm blocks bring their own normalisation; the stack adds nothing but the sums, so a
    ``ResidualStack`` and a :class:`~qimia.layers.qimia.QIMIA` built from the same blocks differ
    only in how depth is mixed.

    Args:
        blocks: residual branches ``f_l``; the same module may repeat (shared weights).
    """

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("ResidualStack needs at least one block.")
        self.blocks = nn.ModuleList(blocks)

    @classmethod
    def shared(cls, block: nn.Module, depth: int) -> ResidualStack:
        """Apply one ``block`` ``depth`` times."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        return cls([block] * depth)

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
            x = x + update
            stream.append(x)
        return DepthOutput(x, None, stream, None)
