"""The result every depth-mixing container returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, overload

from torch import Tensor


class SlotKeys(Sequence[Tensor]):
    """A QIMIA network's keys, each computed on first access.

    The fast depth memory folds the queries into the key projections and never materialises the keys
    (:mod:`qimia.layers.manual_memory`), so only a caller that looks at them pays for them. A key is
    computed in the grad and autocast mode of that first access.

    Args:
        key: ``key(i)`` computes slot ``i``'s key.
        count: number of slots.
    """

    def __init__(self, key: Callable[[int], Tensor], count: int) -> None:
        self._key, self._count = key, count
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> list[Tensor]: ...

    def __getitem__(self, index: int | slice) -> Tensor | list[Tensor]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"slot {index} out of range for {self._count} slots.")
        index %= self._count
        if index not in self._cache:
            self._cache[index] = self._key(index)
        return self._cache[index]


class DepthMemory(NamedTuple):
    """The (key, value) slots a QIMIA network wrote, one per slot, in depth order.

    Attributes:
        keys: one tensor per slot (a list, or :class:`SlotKeys`); ``(B, heads, d_k)`` for layer-wise
            keys, ``(B, *P, heads, d_k)`` for component-wise (or causal layer-wise) keys, ``P`` the
            position axes.
        values: one tensor per slot in the blocks' native layout (e.g. ``(B, T, D)``); slot 0 is
            the embedded input.
    """

    keys: Sequence[Tensor]
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
    keys: Sequence[Tensor] | None
    values: list[Tensor]
    attention: Tensor | None

    @property
    def memory(self) -> DepthMemory:
        """The written slots, ready to pass to another QIMIA as external memory."""
        if self.keys is None:
            raise ValueError("this container writes no keys: only QIMIA outputs carry a depth memory.")
        return DepthMemory(self.keys, self.values)
