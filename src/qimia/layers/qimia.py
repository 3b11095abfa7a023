"""QIMIA: Query Integrated Memory Interfacing Attention.

Instead of a residual stream ``x_l = x_{l-1} + f_l(x_{l-1})``, every block writes a key and a
value into a *depth memory* and reads its input by softmax attention over all earlier slots
with a learned query:

    v_0 = x,                          k_0 = phi_0(v_0)
    input_l = sum_{i<l} softmax_i(q_l . k_i / sqrt(d_k)) v_i        (l = 1 .. L)
    v_l = f_l(input_l),               k_l = phi_l(v_l)
    output  = sum_{i<=L} softmax_i(q_out . k_i / sqrt(d_k)) v_i

``phi_l`` is a per-slot key projection and ``q_l`` a learned query per reader.

Granularity:
    * ``"layer"``: one key per slot and sample, from the values mean-pooled over positions;
      one softmax over depth per sample (and head). ``causal=True`` pools with a running mean
      over a sequence instead, so position ``t`` never sees later tokens (causal LMs).
    * ``"component"``: one key per position (token or pixel); a separate softmax over depth at
      every position.

Heads split the value's ``D`` features into ``heads`` groups of ``D / heads``; each head has
its own queries and keys (``d_k`` each) and mixes its own feature group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.layers.depth_output import DepthMemory, DepthOutput, SlotKeys
from qimia.layers.depth_reads import PositionReads, SampleReads
from qimia.layers.feature_layout import FeatureLayout, same_shape_or_raise
from qimia.layers.manual_memory import GradientPool
from qimia.layers.manual_reads import PositionSlots, SampleSlots

Granularity = Literal["layer", "component"]
Memory = Literal["preallocated", "autograd", "stacked"]
# Slot storage of the autograd-differentiated reads (qimia.layers.depth_reads) for each memory kind.
AUTOGRAD_SLOTS = {"autograd": "preallocated", "stacked": "stacked"}


class QIMIA(nn.Module):
    """Depth-memory container around any list of shape-preserving blocks.

    Args:
        blocks: modules ``f_l`` mapping a tensor to a tensor of the same shape. The same module
            may appear several times (weight sharing across depth, see :meth:`shared`).
        dim: number of features ``D`` of the blocks' tensors.
        key_dim: ``d_k``, size of each head's keys and queries (default: ``D / heads``).
        heads: number of heads; must divide ``dim``.
        granularity: ``"layer"`` (one key per sample) or ``"component"`` (one key per position).
        feature_dim: feature axis of the blocks' tensors: ``-1`` for ``(B, T, D)``, ``1`` for
            ``(B, C, H, W)``.
        causal: with ``granularity="layer"`` on ``(B, T, D)`` sequences, pool keys with a running
            mean so no position reads information from later tokens.
        key_projection: ``"linear"`` (a bias-free ``D -> heads * d_k`` map per slot) or ``"none"``
            (keys are the value's head features themselves; needs ``key_dim == D / heads``).
        key_norm: RMS-normalise every key (no learned gain), which bounds the logits by ``|q|``.
        query_init_std: standard deviation of the queries at initialisation; ``0`` gives uniform
            averaging over earlier slots at the start of training.
        readout: attend over all slots with a final query to produce the output; if ``False`` the
            output is the last block's value ``v_L``.
        fused: with ``memory="autograd"`` or ``"stacked"``, read layer-wise memory with
            ``F.scaled_dot_product_attention`` (default: when available); ``False`` keeps the readable
            softmax-and-matmul reference path. The ``"preallocated"`` memory has its own kernels.
        memory: ``"preallocated"`` (default) writes each slot once into memory allocated up front and
            differentiates the reads by hand (:mod:`qimia.layers.manual_memory`; once
            differentiable); ``"autograd"`` is the same storage differentiated by autograd (double
            backward works); ``"stacked"`` is the readable reference that stacks the slots at every
            read. Both references are in :mod:`qimia.layers.depth_reads`. Under ``torch.compile``
            the stacked form is always used.
        read_phase: layer-wise with ``memory="preallocated"``: the readers served by one pass over the slots
            written before them (two-phase reads, :mod:`qimia.layers.manual_memory`); default about
            ``sqrt(depth)`` for slots of 1 MiB or more, else ``1`` (every reader alone, as per-position reads
            always are). Outputs and gradients do not depend on it.
        detach_external: cut gradients to an external memory passed to :meth:`forward`
            (transfer from a frozen base network).

    Example:
        >>> blocks = [nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 32)) for _ in range(4)]
        >>> net = QIMIA(blocks, dim=32, heads=2)
        >>> out = net(torch.randn(8, 10, 32))
        >>> out.output.shape, len(out.values), out.attention.shape
        (torch.Size([8, 10, 32]), 5, torch.Size([5, 8, 2, 5]))
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        dim: int,
        *,
        key_dim: int | None = None,
        heads: int = 1,
        granularity: Granularity = "layer",
        feature_dim: int = -1,
        causal: bool = False,
        key_projection: Literal["linear", "none"] = "linear",
        key_norm: bool = False,
        query_init_std: float = 0.02,
        readout: bool = True,
        fused: bool | None = None,
        memory: Memory = "preallocated",
        read_phase: int | None = None,
        detach_external: bool = True,
    ) -> None:
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("QIMIA needs at least one block.")
        if granularity not in ("layer", "component"):
            raise ValueError(f"granularity must be 'layer' or 'component', got {granularity!r}.")
        if key_projection not in ("linear", "none"):
            raise ValueError(f"key_projection must be 'linear' or 'none', got {key_projection!r}.")
        if memory not in ("preallocated", *AUTOGRAD_SLOTS):
            raise ValueError(f"memory must be one of ['autograd', 'preallocated', 'stacked'], got {memory!r}.")
        if causal and granularity != "layer":
            raise ValueError("causal=True only changes layer-wise pooling; component-wise keys are already causal.")
        if read_phase is not None and (read_phase < 1 or memory != "preallocated"):
            raise ValueError(
                f"read_phase={read_phase} needs memory='preallocated' and at least 1 reader per phase (got "
                f"memory={memory!r}); drop read_phase for the reference memories."
            )
        if read_phase not in (None, 1) and (granularity == "component" or causal):
            raise ValueError(
                f"read_phase={read_phase}: two-phase reads are layer-wise only (per-position reads serve one "
                "reader at a time); drop read_phase or use granularity='layer' without causal."
            )
        if query_init_std < 0:
            raise ValueError(f"query_init_std must be >= 0, got {query_init_std}.")
        self.layout = FeatureLayout(dim, heads, feature_dim)
        head_dim = dim // heads
        key_dim = head_dim if key_dim is None else key_dim
        if key_dim <= 0:
            raise ValueError(f"key_dim must be positive, got {key_dim}.")
        if key_projection == "none" and key_dim != head_dim:
            raise ValueError(
                f"key_projection='none' uses the values as keys, so key_dim must equal dim / heads = "
                f"{head_dim}; got key_dim={key_dim}. Drop key_dim or use key_projection='linear'."
            )

        self.blocks = nn.ModuleList(blocks)
        self.dim, self.heads, self.key_dim = dim, heads, key_dim
        self.granularity, self.causal, self.readout = granularity, causal, readout
        num_slots = len(blocks) + 1
        num_readers = len(blocks) + int(readout)
        # One learned query per reader: blocks 1..L, then the readout.  (R, H, d_k)
        self.queries = nn.Parameter(torch.randn(num_readers, heads, key_dim) * query_init_std)
        self.key_projections = (
            nn.ModuleList(nn.Linear(dim, heads * key_dim, bias=False) for _ in range(num_slots))
            if key_projection == "linear"
            else None
        )
        self.key_norm = nn.RMSNorm(key_dim, eps=1e-6, elementwise_affine=False) if key_norm else None
        self.scale = 1.0 / math.sqrt(key_dim)
        # Chosen once: the fused kernel, or the readable reference it is tested against.
        self.fused = hasattr(F, "scaled_dot_product_attention") if fused is None else fused
        self.memory_kind = memory
        self.gradient_pool = GradientPool()  # dV kept between backward passes, on CPU (see GradientPool)
        self.read_phase = read_phase
        self.detach_external = detach_external
        # Values are read per position (component, causal layer) or per sample (layer).
        self.per_position = granularity == "component" or causal
        # How the preallocated memory gets a slot's logits (exact unless key_norm normalises the keys):
        # "folded" queries in the key projections where a slot has more key vectors than there are readers
        # (per position: B * T of them); "keyed" layer-wise, a slot's B pooled keys computed by the memory
        # itself (cheaper than the folded (S, D, R, H) projections); "explicit" keys by autograd otherwise.
        if key_norm:
            self.key_path = "explicit"
        elif self.per_position:
            self.key_path = "folded"
        else:
            self.key_path = "keyed" if key_projection == "linear" else "explicit"

    @classmethod
    def shared(cls, block: nn.Module, depth: int, dim: int, **kwargs) -> QIMIA:
        """Apply one ``block`` ``depth`` times, with its own query and key projection per depth."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        return cls([block] * depth, dim, **kwargs)

    @classmethod
    def attention_residuals(cls, blocks: Sequence[nn.Module], dim: int, **kwargs) -> QIMIA:
        """The "attention residuals" preset: component-wise, one head, keys = RMSNorm(values)
        with no projection, zero-initialised queries (uniform averaging at the start)."""
        preset = dict(
            granularity="component", heads=1, key_projection="none", key_norm=True, query_init_std=0.0
        )
        clash = sorted(set(preset) & set(kwargs))
        if clash:
            raise TypeError(f"attention_residuals fixes {clash}; build QIMIA(...) directly to change them.")
        return cls(blocks, dim, **preset, **kwargs)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    # ------------------------------------------------------------------ keys and values
    def _key(self, value: Tensor, slot: int) -> Tensor:
        """Key of one slot: ``(B, H, d_k)`` per sample, or ``(B, *P, H, d_k)`` per position."""
        if self.granularity == "component":
            z = self.layout.features_last(value)  # (B, *P, D)
        elif self.causal:
            z = self.layout.causal_pooled(value)  # (B, T, D)
        else:
            z = self.layout.pooled(value)  # (B, D)
        if self.key_projections is not None:
            z = self.key_projections[slot](z)  # (..., H * d_k)
        key = z.unflatten(-1, (self.heads, self.key_dim))  # (..., H, d_k)
        return key if self.key_norm is None else self.key_norm(key)

    def _key_logits(self, key: Tensor, first: int) -> Tensor:
        """Logits of one slot's key against readers ``first ..``: ``(R_i, *G)`` fp32."""
        queries = self.queries[first:].to(key.dtype)  # (R_i, H, d_k)
        return torch.einsum("...hk,rhk->r...h", key, queries).float() * self.scale

    def _projections(self) -> Tensor:
        """Every slot's key projection with the queries folded in (exact without ``key_norm``):
        ``M_i = W_i^T Q / sqrt(d_k)`` ``(S, D, R, H)``, so that slot ``i``'s logits are ``z_i M_i``."""
        queries = self.queries * self.scale  # (R, H, d_k)
        num_slots = self.depth + 1
        if self.key_projections is None:  # keys are the value's own head features: W = I
            weight = torch.eye(self.dim, device=queries.device, dtype=queries.dtype).expand(num_slots, -1, -1)
        else:
            weight = torch.stack([projection.weight for projection in self.key_projections])  # (S, H * d_k, D)
        weight = weight.reshape(num_slots * self.heads, self.key_dim, self.dim)  # (S*H, d_k, D), no copy
        queries = queries.permute(1, 2, 0).expand(num_slots, -1, -1, -1).reshape(weight.shape[0], self.key_dim, -1)
        folded = torch.bmm(weight.transpose(1, 2), queries)  # (S*H, D, R): W_{i,h}^T Q_h
        folded = folded.view(num_slots, self.heads, self.dim, -1).movedim(1, -1)  # (S, D, R, H)
        return folded.contiguous()

    @staticmethod
    def _default_phase(x: Tensor, dtype: torch.dtype, readers: int) -> int:
        """Two-phase reads save passes over the slots for a few more ops per reader: about ``sqrt(R)``
        readers per phase for slots of 1 MiB or more, else every reader alone (measured on CPU with
        ``benchmarks/depth_mixing.py``: at d=128, 256 KiB slots, the two are within the noise)."""
        slot_bytes = x.numel() * dtype.itemsize
        return max(1, round(math.sqrt(readers))) if slot_bytes >= 1 << 20 else 1

    # ------------------------------------------------------------------ forward
    def _check_external(self, external: DepthMemory, x: Tensor) -> DepthMemory:
        if not isinstance(external, tuple) or len(external) != 2:
            raise TypeError(
                f"external must be a DepthMemory (keys, values), e.g. `base(x).memory` of another QIMIA; got a "
                f"{type(external).__name__}."
            )
        keys, values = external
        if len(keys) != len(values) or not values:
            raise ValueError(
                f"external memory needs one key per value and at least one slot; got {len(keys)} keys "
                f"and {len(values)} values. Pass `other_output.memory` from another QIMIA."
            )
        for i, value in enumerate(values):
            if value.shape != x.shape:
                raise ValueError(
                    f"external value {i} has shape {tuple(value.shape)} but the input has shape "
                    f"{tuple(x.shape)}: the base network's blocks must work at this container's shape."
                )
        if self.detach_external:
            keys, values = [k.detach() for k in keys], [v.detach() for v in values]
        return DepthMemory(list(keys), list(values))

    def forward(
        self, x: Tensor, external: DepthMemory | None = None, *, return_attention: bool = True
    ) -> DepthOutput:
        """Run the blocks over the depth memory.

        Args:
            x: embedded input in the blocks' layout, e.g. ``(B, T, D)`` or ``(B, C, H, W)``.
            external: extra ``(keys, values)`` slots that every reader attends to before this
                network's own slots (e.g. ``base(x).memory`` of a frozen base network). Keys must
                match this container's key shape.
            return_attention: record every reader's weights in the output.

        Returns:
            :class:`DepthOutput` with ``output`` (shape of ``x``), this network's ``L+1`` keys and
            values, and ``attention`` ``(R, *G, S)`` over ``S = E + L + 1`` slots (external first).
        """
        self.layout.check(x, "input x")
        ext = self._check_external(external, x) if external is not None else DepthMemory([], [])
        num_slots = len(ext.values) + self.depth + 1
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
        kind = "stacked" if torch.compiler.is_compiling() else self.memory_kind
        manual = kind == "preallocated"
        if manual:
            counts = [len(ext.values) + reader + 1 for reader in range(self.queries.shape[0])]
            pool = self.gradient_pool if x.device.type == "cpu" else None  # CUDA's allocator caches already
            if self.per_position:
                memory = PositionSlots(self.layout, x, num_slots, counts, self.key_dim, dtype, self.causal, pool)
            else:
                phase = self.read_phase or self._default_phase(x, dtype, len(counts))
                memory = SampleSlots(self.layout, x, num_slots, counts, self.key_dim, dtype, phase, pool)
        elif self.per_position:
            memory = PositionReads(self.layout, self.queries, self.scale, x, num_slots, dtype, AUTOGRAD_SLOTS[kind])
        else:
            memory = SampleReads(
                self.layout, self.queries, self.scale, self.fused, x, num_slots, dtype, AUTOGRAD_SLOTS[kind]
            )
        attention: Tensor | None = None

        def read(reader: int, count: int) -> Tensor:
            nonlocal attention
            if manual:
                mixed = memory.read(reader)
                weights = None
                if return_attention:
                    with torch.no_grad():
                        weights = memory.attention(reader)  # (*G, count)
            else:
                mixed, weights = memory.read(reader, count, need_weights=return_attention)
            if weights is not None and return_attention:
                if attention is None:  # (R, *G, S)
                    attention = weights.new_zeros(self.queries.shape[0], *weights.shape[:-1], num_slots)
                attention[reader, ..., :count] = weights.detach()
            return mixed

        for i, (key, value) in enumerate(zip(*ext)):
            if key.shape != memory.key_shape:
                raise ValueError(
                    f"external key {i} has shape {tuple(key.shape)}, expected {tuple(memory.key_shape)}: "
                    "the base network needs the same heads, key_dim and granularity."
                )
            if manual:
                memory.write(value, memory.from_standard(self._key_logits(key, 0)))
            else:
                memory.write(key, value)

        folded = manual and self.key_path == "folded"
        keyed = manual and self.key_path == "keyed"
        projections = self._projections() if folded else None
        scaled_queries = self.queries * self.scale if keyed else None  # (R, H, d_k)
        keys: list[Tensor] = []
        values: list[Tensor] = []

        def write(value: Tensor) -> None:
            slot = len(values)
            values.append(value)
            if not manual:
                key = self._key(value, slot)
                memory.write(key, value)
                keys.append(key)
            elif memory.first_reader(memory.written) == len(counts):  # no reader sees this slot
                memory.write(value, None)
            elif folded:
                memory.write_folded(value, projections, slot)
            elif keyed:
                memory.write_keyed(value, self.key_projections[slot].weight, scaled_queries, slot)
            else:
                keys.append(self._key(value, slot))
                logits = self._key_logits(keys[-1], memory.first_reader(memory.written))  # (R_i, *G)
                memory.write(value, memory.from_standard(logits))

        write(x)
        for layer, block in enumerate(self.blocks):
            block_input = read(layer, len(ext.values) + layer + 1)
            value = block(block_input)
            same_shape_or_raise(block_input, value, f"block {layer + 1} ({type(block).__name__})")
            write(value)
        output = read(self.depth, num_slots) if self.readout else values[-1]
        if manual:
            memory.close()  # the graph owns the memory, never the reverse
        lazy = folded or keyed  # keys never materialised: the output computes them on first access
        slot_keys = SlotKeys(lambda slot: self._key(values[slot], slot), len(values)) if lazy else keys
        return DepthOutput(output, slot_keys, values, attention)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, depth={self.depth}, heads={self.heads}, key_dim={self.key_dim}, "
            f"granularity={self.granularity!r}, causal={self.causal}, fused={self.fused}, "
            f"memory={self.memory_kind!r}"
        )
