"""The two ways a QIMIA reader attends over the depth memory.

``SampleReads`` (layer-wise): one weight per sample, head and slot. Memory is laid out as
attention expects it, keys ``(B, H, S, d_k)`` and values ``(B, H, S, F)`` with
``F = D_h * prod(P)``, so a read is one batched ``softmax(K q) V``. This is the case the fused
``F.scaled_dot_product_attention`` kernel applies to.

``PositionReads`` (component-wise, and causal layer-wise): one weight per position, head and
slot. A read is an element-wise mixture ``sum_i w_i v_i`` at every position. A batched matmul
here would multiply thousands of ``1 x l`` by ``l x D_h`` matrices, which is slow. So values
stay in their native layout, slot-major ``(S, *native)``, and the mixture is a broadcast
multiply-and-sum. Because the queries are parameters, not data, the logits ``q_r . k_i`` of
slot ``i`` against *every* reader ``r`` are computed once, when the key is written. A read
then only gathers ``l`` logits per position.

Both take their storage from :mod:`qimia.layers.slot_memory`: each slot is written once, and
saved activations stay linear in depth. Autograd differentiates them (``memory="autograd"`` and
``memory="stacked"``); they are the readable references that the default hand-written memory
(:mod:`qimia.layers.manual_memory`, :mod:`qimia.layers.manual_reads`) is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qimia.layers.feature_layout import FeatureLayout
from qimia.layers.slot_memory import SLOT_MEMORIES


class SampleReads:
    """Layer-wise depth memory of one forward pass.

    Args:
        layout: feature layout of the blocks' tensors.
        queries: ``(R, H, d_k)`` reader queries.
        scale: logit scale ``1 / sqrt(d_k)``.
        fused: read with ``F.scaled_dot_product_attention`` instead of softmax-and-matmul.
        like: the input ``x`` (device, batch and positions).
        num_slots: ``S``, external slots included.
        dtype: storage type.
        memory: ``"preallocated"`` or ``"stacked"``.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        queries: Tensor,
        scale: float,
        fused: bool,
        like: Tensor,
        num_slots: int,
        dtype: torch.dtype,
        memory: str,
    ) -> None:
        self.layout, self.queries, self.scale, self.fused = layout, queries, scale, fused
        self.native_ndim = like.dim()
        group = (like.shape[0], layout.heads)  # (B, H)
        self.key_shape = (*group, queries.shape[-1])
        self.item_shape = (*layout.positions(like), layout.head_dim)  # (*P, D_h)
        self.keys = SLOT_MEMORIES[memory](group, (queries.shape[-1],), num_slots, like, dtype)
        self.values = SLOT_MEMORIES[memory](group, self.item_shape, num_slots, like, dtype)

    def write(self, key: Tensor, value: Tensor) -> None:
        """``key`` ``(B, H, d_k)``, ``value`` native."""
        self.keys.write(key)
        self.values.write(self.layout.to_layer(value))  # (B, H, *P, D_h)

    def weights(self, reader: int, count: int) -> Tensor:
        """``softmax_i(q_r . k_i / sqrt(d_k))`` over the first ``count`` slots: ``(B, H, count)``."""
        logits = (self.keys.prefix(count) @ self.queries[reader].unsqueeze(-1)).squeeze(-1)  # (B, H, count)
        return (logits * self.scale).softmax(-1)

    def read(self, reader: int, count: int, need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """Mix the first ``count`` slots for ``reader``: (native tensor, weights ``(B, H, count)``).

        The fused path computes no weights unless ``need_weights`` (they are for inspection only).
        """
        values = self.values.prefix(count).flatten(3)  # (B, H, count, F)
        weights: Tensor | None = None
        if self.fused:
            query = self.queries[reader].unsqueeze(-2).expand(values.shape[0], -1, 1, -1)  # (B, H, 1, d_k)
            mixed = F.scaled_dot_product_attention(query, self.keys.prefix(count), values).squeeze(-2)
            if need_weights:
                with torch.no_grad():
                    weights = self.weights(reader, count)
        else:
            weights = self.weights(reader, count)
            mixed = (weights.unsqueeze(-2).to(values.dtype) @ values).squeeze(-2)  # (B, H, F)
        mixed = mixed.unflatten(-1, self.item_shape)  # (B, H, *P, D_h)
        return self.layout.from_layer(mixed, self.native_ndim), weights


class PositionReads:
    """Component-wise (or causal layer-wise) depth memory of one forward pass.

    Args:
        layout: feature layout of the blocks' tensors.
        queries: ``(R, H, d_k)`` reader queries.
        scale: logit scale ``1 / sqrt(d_k)``.
        like: the input ``x`` (device, batch and positions).
        num_slots: ``S``, external slots included.
        dtype: storage type.
        memory: ``"preallocated"`` or ``"stacked"``.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        queries: Tensor,
        scale: float,
        like: Tensor,
        num_slots: int,
        dtype: torch.dtype,
        memory: str,
    ) -> None:
        self.layout, self.queries, self.scale = layout, queries, scale
        self.native_ndim = like.dim()
        positions = layout.positions(like)
        self.key_shape = (like.shape[0], *positions, layout.heads, queries.shape[-1])
        split = list(like.shape)
        split[layout.feature_dim % like.dim() : layout.feature_dim % like.dim() + 1] = [layout.heads, layout.head_dim]
        logit_item = (like.shape[0], *positions, layout.heads, queries.shape[0])  # (B, *P, H, R)
        self.logits = SLOT_MEMORIES[memory]((), logit_item, num_slots, like, torch.float32)
        self.values = SLOT_MEMORIES[memory]((), tuple(split), num_slots, like, dtype)

    def write(self, key: Tensor, value: Tensor) -> None:
        """``key`` ``(B, *P, H, d_k)``, ``value`` native; logits against every reader are kept."""
        logits = torch.einsum("...hd,rhd->...hr", key, self.queries.to(key.dtype))  # (B, *P, H, R)
        self.logits.write(logits.float() * self.scale)
        self.values.write(self.layout.split(value))  # (*split)

    def read(self, reader: int, count: int, need_weights: bool = True) -> tuple[Tensor, Tensor]:
        """Mix the first ``count`` slots for ``reader``: (native tensor, weights ``(B, *P, H, count)``).

        The weights are a by-product here, so ``need_weights`` changes nothing.
        """
        weights = self.logits.prefix(count)[..., reader].softmax(0)  # (count, B, *P, H)
        values = self.values.prefix(count)  # (count, *split)
        broadcast = self.layout.weights_onto_split(weights, self.native_ndim).to(values.dtype)
        mixed = (broadcast * values).sum(0)  # (*split)
        return self.layout.merge(mixed), weights.movedim(0, -1)
