"""Depth memory with a hand-written backward pass.

A QIMIA network of ``R`` readers over ``S`` slots computes, for reader ``r`` over its ``c_r`` visible slots,

    w_{r,i} = softmax_i(l_{r,i}),      out_r = sum_{i < c_r} w_{r,i} v_i

and the gradient of a loss with upstream gradient ``g_r = dLoss/d out_r`` is

    dv_i   += w_{r,i} g_r                              (into the slot's gradient memory)
    dl_{r,i} = w_{r,i} (a_{r,i} - sum_j w_{r,j} a_{r,j}),  a_{r,i} = <g_r, v_i>

Letting autograd differentiate ``memory[:c]`` splits every read's gradient into one tensor per slot and
sums them again, hundreds of small tensors and thousands of view ops per step. Here the memory owns
its backward instead:

* **Forward.** A write copies the value into the preallocated value memory ``V[i]`` and its logits
  against every reader that will see it into a *reader-major* logit buffer: reader ``r``'s logits over
  its slots are one contiguous block of rows, ``L[o_r : o_r + c_r]``, and only visible (reader, slot)
  pairs have a row. Because the queries are parameters, a slot's logits are known when it is written.
  A read is one softmax over its rows and one mixture.
* **Backward.** Reads run in reverse order and accumulate ``w g`` in place into the gradient memory
  ``dV`` (allocated once per backward pass) and their logit gradients into ``dL``. The backward of
  write ``i`` runs after every read of slot ``i`` and returns the slice ``dV[i]`` and its rows of
  ``dL``. What makes autograd schedule it then is a chain of empty *order* tensors: write ``i`` takes
  the order tensor of write ``i - 1`` and returns its own; a read over ``c`` slots takes that of write
  ``c - 1``, so every read of slot ``i`` depends on write ``i``.

:class:`ManualMemory` holds this bookkeeping; :mod:`qimia.layers.manual_reads` lays out the values and
mixes them for the two granularities. The readable references, ``memory="autograd"`` and
``memory="stacked"`` in :mod:`qimia.layers.depth_reads`, are tested against it (outputs and
gradients). The hand-written backward is once differentiable: use ``memory="autograd"`` for
double backward.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class ManualMemory(ABC):
    """Bookkeeping shared by the layer-wise and per-position memories of one forward pass.

    Subclasses define the value layout (``values``) and the mixture (the abstract methods below).

    Args:
        counts: ``c_r``, the number of slots reader ``r`` sees (non-decreasing).
        group_shape: ``G``, the axes with one weight each, in the order the subclass stores them.
        like: tensor whose device the memory takes.
    """

    def __init__(self, counts: Sequence[int], group_shape: Sequence[int], like: Tensor) -> None:
        self.counts = list(counts)
        self.group_shape = tuple(group_shape)
        starts = [0]
        for count in self.counts:
            starts.append(starts[-1] + count)
        self.starts = starts  # reader r's rows are L[starts[r] : starts[r] + counts[r]]
        self._starts = torch.tensor(starts[:-1], device=like.device)
        self._rows: dict[int, Tensor] = {}
        # Writes go through ``.data`` aliases (their own version counters): readers only ever see
        # complete rows and slots, so the buffers saved by earlier reads stay valid for backward.
        self.logits = torch.empty((starts[-1], *self.group_shape), device=like.device)  # (rows, *G) fp32
        self._logits_raw = self.logits.data
        self.order = torch.empty(0, device=like.device)
        self.written = 0
        self.grads: Tensor | None = None  # dV, allocated by the first read of a backward pass
        self.logit_grads: Tensor | None = None  # dL (rows, *G)
        self.projection_grads: Tensor | None = None  # dM (n, D, R, H) of the folded writes
        self._last_reader: int | None = None

    # ------------------------------------------------------------------ indexing
    def first_reader(self, slot: int) -> int:
        """The first reader that sees ``slot``; readers ``first .. R-1`` all do."""
        return bisect.bisect_right(self.counts, slot)

    def rows(self, slot: int) -> Tensor:
        """Rows of ``L`` holding ``slot``'s logits, one per reader that sees it: ``(R_i,)``."""
        if slot not in self._rows:
            self._rows[slot] = self._starts[self.first_reader(slot) :] + slot
        return self._rows[slot]

    def weights(self, reader: int) -> Tensor:
        """``softmax_i(l_{r,i})`` over reader ``r``'s slots: ``(c_r, *G)`` fp32."""
        start = self.starts[reader]
        return self.logits[start : start + self.counts[reader]].softmax(0)

    def attention(self, reader: int) -> Tensor:
        """Reader ``r``'s weights for inspection, ``(B, H, c_r)`` or ``(B, *P, H, c_r)``."""
        return self.to_standard(self.weights(reader)).movedim(0, -1)

    # ------------------------------------------------------------------ autograd entry points
    def write(self, value: Tensor, logits: Tensor | None) -> None:
        """Append ``value`` (native layout) with its logits ``(R_i, *G)`` against its readers
        (``None`` when no reader sees the slot)."""
        self.order = _Write.apply(self, self.order, value, logits, None)

    def write_folded(self, value: Tensor, projections: Tensor, index: int) -> None:
        """Append ``value`` with logits from the value itself, ``z M`` (no key is materialised).

        ``projections`` ``(n, D, R, H)`` holds the folded key projections ``M = W^T Q / sqrt(d_k)``
        of a network's ``n`` slots against all ``R`` readers, computed in one batched product;
        ``index`` picks this slot's. Their gradient is accumulated here and handed to autograd once,
        by the backward of the write with ``index == 0``, which runs after all the others.
        """
        self.order = _Write.apply(self, self.order, value, projections, index)

    def _projection(self, projections: Tensor, index: int, slot: int) -> Tensor:
        """This slot's readers' columns of its folded projection: ``(D, R_i * H)`` (a view)."""
        return projections[index, :, self.first_reader(slot) :].flatten(1)

    def read(self, reader: int) -> Tensor:
        """Mix reader ``r``'s ``c_r`` slots: native tensor of the value's shape."""
        return _Read.apply(self, reader, self.order)

    def close(self) -> None:
        """End the forward pass: drop the last order tensor. The autograd graph holds this memory
        (every node's ``ctx.memory``); were the memory to hold the graph back through ``order``,
        the cycle would run through C++ autograd nodes that Python's collector cannot see, and
        every step's activations would stay alive. Reads and writes after ``close`` are an error."""
        self.order = None  # type: ignore[assignment]

    def begin_backward(self, reader: int) -> None:
        """Allocate fresh gradient buffers when a new backward pass starts (reads run in reverse
        order, so a reader no earlier than the last one seen starts a new pass)."""
        if self.grads is None or self._last_reader is None or reader >= self._last_reader:
            self.grads = self._allocate_grads()
            self.logit_grads = torch.zeros_like(self.logits)
            self.projection_grads = None
        self._last_reader = reader

    # ------------------------------------------------------------------ layout-specific
    values: Tensor  # the value memory V, laid out by the subclass

    @abstractmethod
    def _store(self, slot: int, value: Tensor) -> None:
        """Copy ``value`` (native layout) into ``V[slot]``."""

    @abstractmethod
    def to_standard(self, grouped: Tensor) -> Tensor:
        """``(n, *G)`` in storage order -> ``(n, B, H)`` or ``(n, B, *P, H)`` (a view)."""

    @abstractmethod
    def from_standard(self, grouped: Tensor) -> Tensor:
        """Inverse of :meth:`to_standard`, e.g. for logits computed from explicit keys."""

    @abstractmethod
    def project(self, slot: int, projection: Tensor) -> Tensor:
        """Folded logits of ``V[slot]``: ``(R_i, *G)`` from ``projection`` ``(D, R_i * H)``."""

    @abstractmethod
    def project_backward(self, slot: int, projection: Tensor, logit_grads: Tensor) -> tuple[Tensor, Tensor]:
        """Gradients of :meth:`project`: (w.r.t. the slot's features, w.r.t. ``projection``)."""

    @abstractmethod
    def add_feature_grad(self, slot: int, feature_grad: Tensor) -> None:
        """Add the gradient reaching ``V[slot]`` through its logits to ``dV[slot]``."""

    @abstractmethod
    def mix(self, weights: Tensor, count: int) -> Tensor:
        """``sum_{i < count} w_i v_i`` for weights ``(count, *G)``: native tensor."""

    @abstractmethod
    def mix_backward(self, weights: Tensor, grad: Tensor, count: int) -> Tensor:
        """Add ``w_i g`` to ``dV[i]`` for ``i < count``; return ``a_i = <g, v_i>`` ``(count, *G)``."""

    @abstractmethod
    def slot_grad(self, slot: int) -> Tensor:
        """``dV[slot]`` in the value's native layout (fp32)."""

    @abstractmethod
    def _allocate_grads(self) -> Tensor:
        """A zeroed gradient memory ``dV`` (and any scratch the backward needs)."""


class _Write(torch.autograd.Function):
    """Copy a value and its logits into the memory; backward returns the slot's gradients.

    ``source`` is the slot's logits ``(R_i, *G)`` (``index`` is ``None``) or all folded projections
    ``(n, D, R, H)`` with this slot's ``index`` (see :meth:`ManualMemory.write_folded`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, memory: ManualMemory, order: Tensor, value: Tensor, source: Tensor | None, index: int | None
    ) -> Tensor:
        slot = memory.written
        memory._store(slot, value)
        if source is not None:
            logits = source if index is None else memory.project(slot, memory._projection(source, index, slot))
            memory._logits_raw.index_copy_(0, memory.rows(slot), logits.float())  # (R_i, *G)
        memory.written += 1
        ctx.memory, ctx.slot, ctx.index, ctx.value_dtype = memory, slot, index, value.dtype
        ctx.has_source = source is not None
        if index is not None:
            ctx.save_for_backward(source)
        return torch.empty(0, device=value.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, _order_grad: Tensor):  # type: ignore[override]
        memory, slot, index = ctx.memory, ctx.slot, ctx.index
        need_value, need_source = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        # Some read of this slot ran before (only reads consume order tensors), so the buffers exist.
        value_grad = source_grad = None
        if ctx.has_source and (need_source or (need_value and index is not None)):
            logit_grads = memory.logit_grads.index_select(0, memory.rows(slot))  # (R_i, *G)
            if index is None:
                source_grad = logit_grads
            else:
                (projections,) = ctx.saved_tensors
                projection = memory._projection(projections, index, slot)
                feature_grad, projection_grad = memory.project_backward(slot, projection, logit_grads)
                if need_value:
                    memory.add_feature_grad(slot, feature_grad)
                if need_source:
                    if memory.projection_grads is None:
                        memory.projection_grads = torch.zeros_like(projections)
                    memory._projection(memory.projection_grads, index, slot).copy_(projection_grad)
                    if index == 0:  # the last folded write to run: hand over every slot's gradient
                        source_grad, memory.projection_grads = memory.projection_grads, None
        if need_value:
            value_grad = memory.slot_grad(slot).to(ctx.value_dtype)
        return None, torch.empty(0, device=_order_grad.device), value_grad, source_grad, None


class _Read(torch.autograd.Function):
    """One reader's mixture; backward accumulates into the gradient memory in place."""

    @staticmethod
    def forward(ctx, memory: ManualMemory, reader: int, order: Tensor):  # type: ignore[override]
        out = memory.mix(memory.weights(reader), memory.counts[reader])
        ctx.memory, ctx.reader = memory, reader
        # The buffers are what the backward reads: saved here, so saved-tensor hooks see them.
        ctx.save_for_backward(memory.values, memory.logits)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        memory, reader = ctx.memory, ctx.reader
        ctx.saved_tensors  # noqa: B018  (unpack the saved buffers: their hooks and version checks run)
        memory.begin_backward(reader)
        count, start = memory.counts[reader], memory.starts[reader]
        weights = memory.weights(reader)  # (c, *G)
        agreement = memory.mix_backward(weights, grad, count)  # a_{r,i} = <g_r, v_i>  (c, *G)
        mean = (weights * agreement).sum(0, keepdim=True)
        memory.logit_grads[start : start + count] = weights * (agreement - mean)
        return None, None, torch.empty(0, device=grad.device)
