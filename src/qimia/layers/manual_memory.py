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
  ``dV`` (one per backward pass, kept for the next one on CPU: :class:`GradientPool`; the pass's
  first read writes it instead of adding to it) and their logit gradients into ``dL``. The backward of
  write ``i`` runs after every read of slot ``i`` and returns the slice ``dV[i]`` and its rows of
  ``dL``. What makes autograd schedule it then is a chain of empty *order* tensors: write ``i`` takes
  the order tensor of write ``i - 1`` and returns its own; a read over ``c`` slots takes that of write
  ``c - 1``, so every read of slot ``i`` depends on write ``i``.
* **Two-phase reads** (layer-wise; Attention Residuals, 2026). Because the logits of every written slot against
  every later reader are known, readers are served in *phases* of ``b`` consecutive readers
  ``r_0 .. r_0 + b - 1``. At the phase's first read the ``c_0 = c_{r_0}`` slots written so far are mixed
  for all ``b`` readers in one pass over them, with each reader's softmax over those slots alone,
  ``P_r = sum_{i < c_0} u_{r,i} v_i``; reader ``r`` then adds the slots written inside the phase,

      out_r = alpha_r P_r + sum_{c_0 <= i < c_r} w_{r,i} v_i,      alpha_r = sum_{i < c_0} w_{r,i}

  (``w_{r,i} = alpha_r u_{r,i}`` for ``i < c_0``). The backward mirrors it: a reader handles its
  in-phase slots at once, with ``sum_j w_{r,j} a_{r,j} = <g_r, out_r>``, and keeps ``g_r``; the
  phase's older slots get ``dV[:c_0] += W^T G`` and their ``a = G V^T`` for all ``b`` readers in one
  pass, run by the backward of write ``c_0 - 1`` (the first one after every read of the phase).
  The older slots are then read about ``1/b`` times as often: a phase of ``b ~ sqrt(R)`` moves about
  ``2 / sqrt(R)`` of the bytes of one read per reader, for a few more (smaller) ops per reader.
  ``b = 1`` is one read per reader. Readers that get no gradient leave ``g = 0`` out of the phase's
  sums, so a loss on a few slots only is still exact.

:class:`ManualMemory` holds this bookkeeping; :mod:`qimia.layers.manual_reads` lays out the values and
mixes them for the two granularities. The readable references, ``memory="autograd"`` and
``memory="stacked"`` in :mod:`qimia.layers.depth_reads`, are tested against it (outputs and
gradients). The hand-written backward is once differentiable: use ``memory="autograd"`` for
double backward.
"""

from __future__ import annotations

import bisect
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class GradientPool:
    """Keeps the gradient memory ``dV`` of one backward pass for the next (one buffer).

    A fresh multi-megabyte buffer pays its page faults at first touch on every step, since the C
    allocator hands large blocks back to the system: at d=128, T=128, B=4, depth 24 (6.5 MB) the
    zero fill of a fresh ``dV`` took about 4 ms of a step, against 0.5 ms for a buffer in use. A memory
    gives its ``dV`` back when its pass has ended (the backward of its first differentiable write, which
    autograd runs last) and the next pass of the same shape and device takes it. Slot gradients never
    alias a pooled buffer (:meth:`ManualMemory.value_grad` copies views). Meant for CPU: CUDA's caching
    allocator already reuses memory. Copies and pickles of a module start with an empty pool.
    """

    def __init__(self) -> None:
        self._free: Tensor | None = None
        self._lock = threading.Lock()

    def take(self, shape: Sequence[int], device: torch.device) -> Tensor:
        """The kept buffer if it has this shape and device, else a new one (fp32, uninitialised)."""
        with self._lock:
            free, self._free = self._free, None
        if free is not None and free.shape == tuple(shape) and free.device == device:
            return free
        return torch.empty(tuple(shape), device=device)

    def give(self, buffer: Tensor) -> None:
        with self._lock:
            self._free = buffer

    def __reduce__(self):  # deepcopy and pickle: a fresh, empty pool (no lock, no buffer carried over)
        return (GradientPool, ())


class ManualMemory(ABC):
    """Bookkeeping shared by the layer-wise and per-position memories of one forward pass.

    Subclasses define the value layout (``values``) and the mixture (the abstract methods below).

    Args:
        counts: ``c_r``, the number of slots reader ``r`` sees (non-decreasing).
        group_shape: ``G``, the axes with one weight each, in the order the subclass stores them.
        like: tensor whose device the memory takes.
        phase: ``b``, readers per phase of the two-phase reads (``1``: every reader reads alone).
        pool: where ``dV`` comes from and goes back to after the pass (``None``: a new one per pass).
    """

    def __init__(
        self,
        counts: Sequence[int],
        group_shape: Sequence[int],
        like: Tensor,
        phase: int = 1,
        pool: GradientPool | None = None,
    ) -> None:
        if phase < 1:
            raise ValueError(f"phase must be >= 1 reader, got {phase}.")
        self.counts = list(counts)
        self.phase = phase
        # Reader r belongs to the phase that starts at reader first[r]; it sees old[r] = c_{first} slots
        # that were written before the phase. The phase's older slots are handled by the backward of the
        # write of slot old - 1 (flushes: slot -> first readers of its phases).
        self.first = [reader - reader % phase for reader in range(len(self.counts))]
        self.old = [self.counts[first] for first in self.first]
        self.flushes: dict[int, list[int]] = {}
        for first in range(0, len(self.counts), phase) if phase > 1 else ():
            self.flushes.setdefault(self.counts[first] - 1, []).append(first)
        self.partial: Tensor | None = None  # the current phase's P_r (layout of mix_old)
        self.pending: dict[int, list[tuple[int, Tensor | None]]] = {}  # phase -> [(reader, <g, out> | None)]
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
        self.query_grads: Tensor | None = None  # dQ (R, H, d_k) of the keyed writes
        self._last_reader: int | None = None
        self.pool = pool
        self.last_write: int | None = None  # the first slot whose write is an autograd node: its backward runs last

    # ------------------------------------------------------------------ indexing
    def first_reader(self, slot: int) -> int:
        """The first reader that sees ``slot``; readers ``first .. R-1`` all do."""
        return bisect.bisect_right(self.counts, slot)

    def rows(self, slot: int) -> Tensor:
        """Rows of ``L`` holding ``slot``'s logits, one per reader that sees it: ``(R_i,)``."""
        if slot not in self._rows:
            self._rows[slot] = self._starts[self.first_reader(slot) :] + slot
        return self._rows[slot]

    def store_logits(self, slot: int, logits: Tensor) -> None:
        """Write ``slot``'s logits ``(R_i, *G)`` against its readers into their rows of ``L``."""
        self._logits_raw.index_copy_(0, self.rows(slot), logits.float())

    def weights(self, reader: int) -> Tensor:
        """``softmax_i(l_{r,i})`` over reader ``r``'s slots: ``(c_r, *G)`` fp32."""
        start = self.starts[reader]
        return self.logits[start : start + self.counts[reader]].softmax(0)

    def members(self, first: int) -> range:
        """The readers of the phase that starts at reader ``first``."""
        return range(first, min(first + self.phase, len(self.counts)))

    def old_weights(self, readers: Sequence[int], old: int) -> Tensor:
        """``u_{r,i}``: each reader's softmax over the first ``old`` slots alone, ``(n, old, *G)`` fp32."""
        return torch.stack([self.logits[self.starts[r] : self.starts[r] + old] for r in readers]).softmax(1)

    def attention(self, reader: int) -> Tensor:
        """Reader ``r``'s weights for inspection, ``(B, H, c_r)`` or ``(B, *P, H, c_r)``."""
        return self.to_standard(self.weights(reader)).movedim(0, -1)

    # ------------------------------------------------------------------ autograd entry points
    def write(self, value: Tensor, logits: Tensor | None) -> None:
        """Append ``value`` (native layout) with its logits ``(R_i, *G)`` against its readers
        (``None`` when no reader sees the slot)."""
        self._note_node(self.order, value, logits)
        self.order = _Write.apply(self, self.order, value, logits, None)

    def write_folded(self, value: Tensor, projections: Tensor, index: int) -> None:
        """Append ``value`` with logits from the value itself, ``z M`` (no key is materialised).

        ``projections`` ``(n, D, R, H)`` holds the folded key projections ``M = W^T Q / sqrt(d_k)``
        of a network's ``n`` slots against all ``R`` readers, computed in one batched product;
        ``index`` picks this slot's. Their gradient is accumulated here and handed to autograd once,
        by the backward of the write with ``index == 0``, which runs after all the others.
        """
        self._note_node(self.order, value, projections)
        self.order = _Write.apply(self, self.order, value, projections, index)

    def write_keyed(self, value: Tensor, weight: Tensor, queries: Tensor, index: int) -> None:
        """Append ``value`` with logits from its key ``k = W z`` (``z`` the value's pooled features)
        against ``queries`` ``(R, H, d_k)``, already scaled by ``1 / sqrt(d_k)``: keys and logits are
        computed here, with no autograd node of their own. ``weight`` ``(H * d_k, D)`` is this slot's key
        projection; the queries' gradient is accumulated here and handed to autograd once, by the
        backward of the write with ``index == 0``, which runs after all the others.
        """
        self._note_node(self.order, value, weight, queries)
        self.order = _KeyedWrite.apply(self, self.order, value, weight, queries, index)

    def _note_node(self, *inputs: Tensor | None) -> None:
        """Remember the first write that autograd records (it has an input that requires grad)."""
        if self.last_write is None and torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in inputs
        ):
            self.last_write = self.written

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
        self.partial = None  # the last phase's mixtures: not needed by the backward

    def begin_backward(self, reader: int) -> bool:
        """Allocate fresh gradient buffers when a new backward pass starts (reads run in reverse
        order, so a reader no earlier than the last one seen starts a new pass); True if it did.

        With one reader per phase, ``dV`` is left uninitialised: the pass's first read sees the most
        slots of all its reads (counts never decrease with the reader), so it writes ``w g`` into
        ``dV[:c]`` and zeros into ``dV[c:]`` instead of accumulating (no separate zero pass)."""
        fresh = self.grads is None or self._last_reader is None or reader >= self._last_reader
        if fresh:
            self.grads = self._allocate_grads(zeroed=self.phase > 1)
            self.logit_grads = torch.zeros_like(self.logits)
            self.projection_grads = self.query_grads = None
            self.pending = {}
        self._last_reader = reader
        return fresh

    def value_grad(self, slot: int, dtype: torch.dtype) -> Tensor:
        """``dV[slot]`` for autograd, in the value's dtype. A view of a pooled ``dV`` is copied: the next
        pass overwrites the buffer, and the gradient may live on (a leaf's ``.grad``, a hook)."""
        grad = self.slot_grad(slot).to(dtype)
        if self.pool is not None and grad.untyped_storage().data_ptr() == self.grads.untyped_storage().data_ptr():
            grad = grad.clone()
        return grad

    def end_write_backward(self, slot: int) -> None:
        """After a write's backward: the pass's last one hands ``dV`` back to the pool."""
        if self.pool is not None and slot == self.last_write and self.grads is not None:
            self.pool.give(self.grads)
            self.grads = None

    def gradient_memory(self, zeroed: bool) -> Tensor:
        """A ``dV`` of the values' shape, fp32, from the pool if there is one; zeroed or uninitialised."""
        shape, device = self.values.shape, self.values.device
        grads = self.pool.take(shape, device) if self.pool is not None else torch.empty(shape, device=device)
        return grads.zero_() if zeroed else grads

    # ------------------------------------------------------------------ reads
    def mix_reader(self, reader: int) -> tuple[Tensor, bool]:
        """Reader ``r``'s mixture (native) and whether its backward needs it (two-phase in-phase slots)."""
        count = self.counts[reader]
        if self.phase == 1:
            return self.mix(self.weights(reader), count), False
        first, old = self.first[reader], self.old[reader]
        if reader == first:  # one pass over the older slots for the whole phase
            self.partial = self.mix_old(self.old_weights(self.members(first), old), old)
        if count == old:
            return self.mix_new(self.partial, reader - first, None, None, old, count), False
        weights = self.weights(reader)  # (c, *G)
        alpha = weights[:old].sum(0)  # (*G)
        return self.mix_new(self.partial, reader - first, alpha, weights[old:], old, count), True

    def read_backward(self, reader: int, grad: Tensor, out: Tensor | None) -> None:
        """Reader ``r``'s backward; in two-phase reads, its older slots wait for :meth:`flush`."""
        first_of_pass = self.begin_backward(reader)
        count, start = self.counts[reader], self.starts[reader]
        if self.phase == 1:
            weights = self.weights(reader)  # (c, *G)
            g = self.grad_layout(grad)
            agreement = self.mix_backward(weights, g, 0, count, overwrite=first_of_pass)  # a_{r,i} = <g_r, v_i>
            mean = (weights * agreement).sum(0, keepdim=True)
            self.logit_grads[start : start + count] = weights * (agreement - mean)
            return
        first, old = self.first[reader], self.old[reader]
        g = self.stash(reader - first, grad)
        mean = None
        if count > old:
            weights = self.weights(reader)[old:]  # (k, *G)
            agreement = self.mix_backward(weights, g, old, count)  # a_{r,i} = <g_r, v_i>, in-phase slots
            mean = self.inner(grad, out)  # sum_j w_{r,j} a_{r,j} = <g_r, out_r>
            self.logit_grads[start + old : start + count] = weights * (agreement - mean)
        self.pending.setdefault(first, []).append((reader, mean))

    def flush(self, slot: int) -> None:
        """The older slots' part of the backward of every phase whose older slots end at ``slot``."""
        for first in self.flushes.get(slot, ()):
            done = self.pending.pop(first, [])
            if not done:
                continue  # no reader of this phase was differentiated
            old = self.old[first]
            done.sort(key=lambda entry: entry[0])  # they ran in reverse
            readers = [reader for reader, _ in done]
            weights = torch.stack([self.weights(reader)[:old] for reader in readers])  # (n, old, *G)
            agreement = self.old_backward([reader - first for reader in readers], weights, old)  # (n, old, *G)
            for k, (reader, mean) in enumerate(done):
                if mean is None:  # no in-phase slots: the reader's mean is over these slots alone
                    mean = (weights[k] * agreement[k]).sum(0, keepdim=True)
                start = self.starts[reader]
                self.logit_grads[start : start + old] = weights[k] * (agreement[k] - mean)

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

    # Folded writes (:meth:`write_folded`): memories that fold the queries into the key projections
    # override these three.
    def project(self, slot: int, projection: Tensor) -> Tensor:
        """Folded logits of ``V[slot]``: ``(R_i, *G)`` from ``projection`` ``(D, R_i * H)``."""
        raise TypeError(f"{type(self).__name__} takes explicit logits: use write(), not write_folded().")

    def project_backward(self, slot: int, projection: Tensor, logit_grads: Tensor) -> tuple[Tensor, Tensor]:
        """Gradients of :meth:`project`: (w.r.t. the slot's features, w.r.t. ``projection``)."""
        raise TypeError(f"{type(self).__name__} takes explicit logits: use write(), not write_folded().")

    def add_feature_grad(self, slot: int, feature_grad: Tensor) -> None:
        """Add the gradient reaching ``V[slot]`` through its logits to ``dV[slot]``."""
        raise TypeError(f"{type(self).__name__} takes explicit logits: use write(), not write_folded().")

    @abstractmethod
    def mix(self, weights: Tensor, count: int) -> Tensor:
        """``sum_{i < count} w_i v_i`` for weights ``(count, *G)``: native tensor."""

    @abstractmethod
    def grad_layout(self, grad: Tensor) -> Tensor:
        """An upstream gradient (native) in the layout :meth:`mix_backward` takes."""

    @abstractmethod
    def mix_backward(self, weights: Tensor, grad: Tensor, start: int, count: int, overwrite: bool = False) -> Tensor:
        """Add ``w_i g`` to ``dV[i]`` for ``start <= i < count``; return ``a_i = <g, v_i>`` ``(count - start, *G)``.
        ``overwrite`` (the first read of a pass, ``start == 0``, ``dV`` uninitialised): set ``dV[i] = w_i g``
        for ``i < count`` and ``dV[i] = 0`` for the slots after them."""

    # Keyed writes (:meth:`write_keyed`): memories with pooled keys override these two.
    def key_logits(self, slot: int, weight: Tensor, queries: Tensor) -> Tensor:
        """Logits ``(R_i, *G)`` of ``V[slot]``'s key ``W z`` against its readers' ``queries`` ``(R_i, H, d_k)``."""
        raise TypeError(f"{type(self).__name__} takes explicit or folded logits: use write() or write_folded().")

    def key_backward(self, slot: int, weight: Tensor, queries: Tensor, logit_grads: Tensor) -> tuple[Tensor, ...]:
        """Gradients of :meth:`key_logits`: (w.r.t. the slot's features, ``weight``, ``queries``)."""
        raise TypeError(f"{type(self).__name__} takes explicit or folded logits: use write() or write_folded().")

    # Two-phase reads (``phase > 1``): memories that support them override these five.
    def mix_old(self, weights: Tensor, old: int) -> Tensor:
        """``P_j = sum_{i < old} u_{j,i} v_i`` for the ``n`` readers of a phase, weights ``(n, old, *G)``
        (in the subclass's layout, for :meth:`mix_new`)."""
        raise TypeError(f"{type(self).__name__} serves one reader at a time: use phase=1.")

    def mix_new(self, partial: Tensor, j: int, alpha: Tensor | None, weights: Tensor | None, old: int,
                count: int) -> Tensor:
        """``alpha P_j + sum_{old <= i < count} w_i v_i`` (just ``P_j`` when ``alpha`` is ``None``):
        native tensor; ``alpha`` ``(*G)``, ``weights`` ``(count - old, *G)``."""
        raise TypeError(f"{type(self).__name__} serves one reader at a time: use phase=1.")

    def stash(self, j: int, grad: Tensor) -> Tensor:
        """Keep phase member ``j``'s upstream gradient (native) for :meth:`old_backward`; return it in
        the layout :meth:`mix_backward` takes."""
        raise TypeError(f"{type(self).__name__} serves one reader at a time: use phase=1.")

    def inner(self, grad: Tensor, out: Tensor) -> Tensor:
        """``<g, out>`` per weight group: native tensors -> ``(1, *G)`` fp32."""
        raise TypeError(f"{type(self).__name__} serves one reader at a time: use phase=1.")

    def old_backward(self, js: Sequence[int], weights: Tensor, old: int) -> Tensor:
        """For the stashed gradients ``g_j`` of phase members ``js``, weights ``(n, old, *G)``: add
        ``sum_j w_{j,i} g_j`` to ``dV[i]`` for ``i < old``; return ``a_{j,i} = <g_j, v_i>`` ``(n, old, *G)``."""
        raise TypeError(f"{type(self).__name__} serves one reader at a time: use phase=1.")

    @abstractmethod
    def slot_grad(self, slot: int) -> Tensor:
        """``dV[slot]`` in the value's native layout (fp32)."""

    @abstractmethod
    def _allocate_grads(self, zeroed: bool) -> Tensor:
        """A gradient memory ``dV``, zeroed or left uninitialised (and any scratch the backward needs)."""


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
            memory.store_logits(slot, logits)
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
        memory.flush(slot)  # every read of this slot is done: finish the phases whose older slots end here
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
            value_grad = memory.value_grad(slot, ctx.value_dtype)
        memory.end_write_backward(slot)
        return None, torch.empty(0, device=_order_grad.device), value_grad, source_grad, None


class _KeyedWrite(torch.autograd.Function):
    """Copy a value into the memory with logits from its own key (see :meth:`ManualMemory.write_keyed`);
    backward returns the slot's gradients and those of its key projection."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, memory: ManualMemory, order: Tensor, value: Tensor, weight: Tensor, queries: Tensor, index: int
    ) -> Tensor:
        slot = memory.written
        memory._store(slot, value)
        first = memory.first_reader(slot)
        memory.store_logits(slot, memory.key_logits(slot, weight, queries[first:]))
        memory.written += 1
        ctx.memory, ctx.slot, ctx.first, ctx.index, ctx.value_dtype = memory, slot, first, index, value.dtype
        ctx.save_for_backward(weight, queries)
        return torch.empty(0, device=value.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, _order_grad: Tensor):  # type: ignore[override]
        memory, slot, first = ctx.memory, ctx.slot, ctx.first
        memory.flush(slot)  # every read of this slot is done: finish the phases whose older slots end here
        need_value, need_weight, need_queries = ctx.needs_input_grad[2:5]
        weight, queries = ctx.saved_tensors
        value_grad = weight_grad = query_grad = None
        if need_value or need_weight or need_queries:
            logit_grads = memory.logit_grads.index_select(0, memory.rows(slot))  # (R_i, *G)
            feature_grad, weight_grad, slot_query_grad = memory.key_backward(
                slot, weight, queries[first:], logit_grads
            )
            if need_value:
                memory.add_feature_grad(slot, feature_grad)
            if need_queries:
                if memory.query_grads is None:
                    memory.query_grads = torch.zeros_like(queries)
                memory.query_grads[first:] += slot_query_grad
                if ctx.index == 0:  # the last keyed write to run: hand over every slot's gradient
                    query_grad, memory.query_grads = memory.query_grads, None
        if need_value:
            value_grad = memory.value_grad(slot, ctx.value_dtype)
        memory.end_write_backward(slot)
        return (None, torch.empty(0, device=_order_grad.device), value_grad,
                weight_grad if need_weight else None, query_grad, None)


class _Read(torch.autograd.Function):
    """One reader's mixture; backward accumulates into the gradient memory in place."""

    @staticmethod
    def forward(ctx, memory: ManualMemory, reader: int, order: Tensor):  # type: ignore[override]
        out, needs_out = memory.mix_reader(reader)
        ctx.memory, ctx.reader, ctx.needs_out = memory, reader, needs_out
        # The buffers are what the backward reads: saved here, so saved-tensor hooks see them. The output
        # (the next block's input, which that block usually saves too) gives the in-phase backward its mean.
        ctx.save_for_backward(memory.values, memory.logits, *([out] if needs_out else []))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        saved = ctx.saved_tensors  # (unpacking runs the saved buffers' hooks and version checks)
        ctx.memory.read_backward(ctx.reader, grad, saved[2] if ctx.needs_out else None)
        return None, None, torch.empty(0, device=grad.device)
