"""Depth memory: one slot per block, written once, read as a growing prefix.

A depth-mixing network reads, at block ``l``, all slots ``0 .. l-1``. Stacking the earlier
outputs anew at every block copies ``O(L^2)`` activations and, worse, autograd keeps every
stacked copy alive for the backward pass, so saved activations grow quadratically with depth.

``PreallocatedSlots`` allocates the memory once, shape ``(*G, S, *I)`` (groups ``G``, slots
``S``, item ``I``), copies each slot in exactly once, and hands out the prefix ``[:count]`` as
a *view*. Slots below ``count`` never change after they are written, so the view is safe to
save for backward; the autograd function ``_PrefixRead`` routes the gradient of each read
back to the tensor that was written into each slot. Saved activations are linear in depth.

``StackedSlots`` is the readable reference with the same interface (``torch.stack`` at every
read). It is also what runs under ``torch.compile``, which traces plain tensor code best.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class _PrefixRead(torch.autograd.Function):
    """``memory[..., :count, ...]`` as a view, differentiable w.r.t. the written items."""

    @staticmethod
    def forward(ctx, memory: Tensor, slot_dim: int, count: int, *items: Tensor) -> Tensor:  # type: ignore[override]
        ctx.slot_dim = slot_dim
        return memory.narrow(slot_dim, 0, count)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        # grad: (*G, count, *I) -> one (*G, *I) gradient per written item.
        return (None, None, None, *grad.unbind(ctx.slot_dim))


class PreallocatedSlots:
    """Slot memory ``(*G, S, *I)`` allocated once, each slot written once.

    Args:
        group_shape: leading axes ``G`` (e.g. ``(B, heads)``).
        item_shape: trailing axes ``I`` of one slot (e.g. ``(T, D_h)``).
        num_slots: ``S``, the number of slots.
        like: tensor whose device the memory takes.
        dtype: element type of the memory.
    """

    def __init__(
        self,
        group_shape: Sequence[int],
        item_shape: Sequence[int],
        num_slots: int,
        like: Tensor,
        dtype: torch.dtype,
    ) -> None:
        self.slot_dim = len(group_shape)
        shape = (*group_shape, num_slots, *item_shape)
        # Writes go through ``.data`` (its own version counter): readers only ever see slots
        # that are complete, so views handed out earlier stay valid for backward.
        self.memory = torch.empty(shape, dtype=dtype, device=like.device)
        self._raw = self.memory.data
        self._items: list[Tensor] = []

    def write(self, item: Tensor) -> None:
        """Append ``item`` ``(*G, *I)`` to the next free slot."""
        self._raw.select(self.slot_dim, len(self._items)).copy_(item.detach())
        self._items.append(item)

    def prefix(self, count: int) -> Tensor:
        """Slots ``[0, count)`` as ``(*G, count, *I)``; gradients flow to the written items."""
        items = self._items[:count]
        if torch.is_grad_enabled() and any(t.requires_grad for t in items):
            return _PrefixRead.apply(self.memory, self.slot_dim, count, *items)
        return self.memory.narrow(self.slot_dim, 0, count)


class StackedSlots:
    """Reference slot memory: a list of items, stacked at every read (same interface)."""

    def __init__(
        self,
        group_shape: Sequence[int],
        item_shape: Sequence[int],
        num_slots: int,
        like: Tensor,
        dtype: torch.dtype,
    ) -> None:
        self.slot_dim = len(group_shape)
        self.dtype = dtype
        self._items: list[Tensor] = []

    def write(self, item: Tensor) -> None:
        self._items.append(item.to(self.dtype))

    def prefix(self, count: int) -> Tensor:
        return torch.stack(self._items[:count], dim=self.slot_dim)


SLOT_MEMORIES = {"preallocated": PreallocatedSlots, "stacked": StackedSlots}
