"""DenseFormer's depth-weighted average (Pagliardini et al., 2024) over the same blocks.

After each residual block the stream is replaced by a learned average of every earlier state:

    h_l = y_{l-1} + f_l(y_{l-1}),        h_0 = x
    y_l = sum_{i<=l} alpha_{l,i} h_i

with scalar weights initialised to the identity (``alpha_{l,l} = 1``, others 0), so at
initialisation the network *is* the residual stack. Unlike QIMIA the weights are the same for
every input: a static mixture over depth, not an attention read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from qimia.layers.depth_output import DepthOutput
from qimia.layers.feature_layout import same_shape_or_raise
from qimia.layers.slot_memory import SLOT_MEMORIES


class DepthWeightedAverage(nn.Module):
    """Residual blocks followed by a learned depth-weighted average of all earlier states.

    Args:
        blocks: residual branches ``f_l``.
        memory: ``"preallocated"`` (states written once) or ``"stacked"`` (readable reference).
    """

    def __init__(
        self, blocks: Sequence[nn.Module], *, memory: Literal["preallocated", "stacked"] = "preallocated"
    ) -> None:
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("DepthWeightedAverage needs at least one block.")
        if memory not in SLOT_MEMORIES:
            raise ValueError(f"memory must be one of {sorted(SLOT_MEMORIES)}, got {memory!r}.")
        self.blocks = nn.ModuleList(blocks)
        # alpha_l has l + 1 weights over h_0 .. h_l, initialised to pick h_l.
        self.alphas = nn.ParameterList(
            nn.Parameter(torch.nn.functional.one_hot(torch.tensor(layer + 1), layer + 2).float())
            for layer in range(len(blocks))
        )
        self.memory_kind = memory

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor, *, return_attention: bool = True) -> DepthOutput:
        """``x``: any shape the blocks take -> :class:`DepthOutput`; ``attention`` is the
        ``(L, L+1)`` weight matrix (zero above the diagonal), the same for every input."""
        kind = "stacked" if torch.compiler.is_compiling() else self.memory_kind
        states = SLOT_MEMORIES[kind]((), (x.numel(),), self.depth + 1, x, x.dtype)
        states.write(x.reshape(-1))
        y, stream = x, [x]
        for layer, (block, alpha) in enumerate(zip(self.blocks, self.alphas)):
            update = block(y)
            same_shape_or_raise(y, update, f"block {layer + 1} ({type(block).__name__})")
            h = y + update
            states.write(h.reshape(-1))
            mixed = alpha.to(h.dtype) @ states.prefix(layer + 2)  # (l+1,) @ (l+1, N) -> (N,)
            y = mixed.view_as(x)
            stream.append(y)
        attention = None
        if return_attention:
            attention = x.new_zeros(self.depth, self.depth + 1, dtype=torch.float32)
            for layer, alpha in enumerate(self.alphas):
                attention[layer, : layer + 2] = alpha.detach()
        return DepthOutput(y, None, stream, attention)
