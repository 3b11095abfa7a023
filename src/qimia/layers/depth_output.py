"""The result every depth-mixing container returns."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class DepthMemory(NamedTuple):
    """The (key, value) slots a QIMIA network wrote, one per slot, in depth order.

    Attributes:
        keys: one tensor per slot; ``(B, heads, d_k)`` for layer-wise keys, ``(B, *P, heads, d_k)``
            for component-wise (or causal layer-wise) keys, ``P`` the position axes.
        values: one tensor per slot in the blocks' native layout (e.g. ``(B, T, D)``); slot 0 is
            the embedded input.
    """

    keys: list[Tensor]
    values: list[Tensor]


class DepthOutput(NamedTuple):
    """Output of a depth-mixing container (QIMIA, residual, depth-weighted average).

    Attributes:
        output: the container's output, same shape as its input.
        keys: per-slot keys (QIMIA only, else ``None``); see :class:`DepthMemory`.
        values: per-slot values in native layout: QIMIA's memory (slot 0 = input), or the
            residual stream after each block for the baselines.
        attention: ``(R, *G, S)`` weights of each reader ``r`` over the ``S`` slots (zero on
            slots the reader cannot see), ``G`` any group axes (batch, positions, heads). For
            QIMIA the readers are blocks ``1..L`` then the readout; ``None`` when not recorded.
    """

    output: Tensor
    keys: list[Tensor] | None
    values: list[Tensor]
    attention: Tensor | None

    @property
    def memory(self) -> DepthMemory:
        """The written slots, ready to pass to another QIMIA as external memory."""
        if self.keys is None:
            raise ValueError("this container writes no keys: only QIMIA outputs carry a depth memory.")
        return DepthMemory(self.keys, self.values)
