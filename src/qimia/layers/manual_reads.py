"""Value layouts and mixtures of the hand-written depth memory (:mod:`qimia.layers.manual_memory`).

``SampleSlots`` (layer-wise): one weight per sample and head. Values live in attention layout
``(B*H, S, F)`` with ``F = prod(P) * D_h``, so a read is one batched matrix product,
``out = w^T V[:, :c]`` ``(B*H, 1, F)``, and its backward an in-place multiply-add
``dV[:, :c] += w g`` and one more product, ``a = V[:, :c] g``.

``PositionSlots`` (component-wise, and causal layer-wise): one weight per position and head. Values
stay slot-major in their native layout with the feature axis split into heads, ``(S, *split)``; a read
is ``sum_i w_i v_i`` accumulated slot by slot into one output that stays in cache, and its backward
is one in-place multiply-add into ``dV[:c]`` and one product-and-sum for ``a_i = <g, v_i>``.

Folded logits: with ``M = W^T Q / sqrt(d_k)`` ``(D, H * R_i)`` the logits of slot ``i`` against its
``R_i`` readers are ``z_i M``, ``z_i`` the slot's pooled features: the mean over positions
(layer-wise), the features at every position (component-wise), or, for causal layer-wise reads,
the features at every position followed by a running mean over the sequence applied to the
``H * R_i`` logits rather than to the ``D`` features (the two commute because both are linear).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from qimia.layers.feature_layout import FeatureLayout
from qimia.layers.manual_memory import ManualMemory


class SampleSlots(ManualMemory):
    """Layer-wise memory of one forward pass.

    Args:
        layout: feature layout of the blocks' tensors.
        like: the input ``x`` (device, batch and positions).
        num_slots: ``S``, external slots included.
        counts: slots seen by each reader.
        key_dim: ``d_k`` (for the shape external keys must have).
        dtype: storage type of the values.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        like: Tensor,
        num_slots: int,
        counts: Sequence[int],
        key_dim: int,
        dtype: torch.dtype,
    ) -> None:
        self.layout, self.native_ndim = layout, like.dim()
        self.batch, self.heads = like.shape[0], layout.heads
        self.item_shape = (*layout.positions(like), layout.head_dim)  # (*P, D_h)
        self.positions = math.prod(self.item_shape[:-1])
        super().__init__(counts, (self.batch, self.heads), like)
        self.key_shape = (self.batch, self.heads, key_dim)
        shape = (self.batch * self.heads, num_slots, math.prod(self.item_shape))  # (B*H, S, F)
        self.values = torch.empty(shape, dtype=dtype, device=like.device)
        self._values_raw = self.values.data
        self._pooled: dict[int, Tensor] = {}

    def _slot(self, memory: Tensor, slot: int) -> Tensor:
        return memory[:, slot].view(self.batch, self.heads, *self.item_shape)  # (B, H, *P, D_h)

    def _features(self, slot: int) -> Tensor:
        """Mean over positions: ``(B, D)``, kept for the backward (it is small)."""
        if slot not in self._pooled:
            v = self.values[:, slot].view(self.batch, self.heads, self.positions, -1)  # (B, H, P, D_h)
            self._pooled[slot] = v.mean(2).flatten(1)
        return self._pooled[slot]

    def _store(self, slot: int, value: Tensor) -> None:
        self._slot(self._values_raw, slot).copy_(self.layout.to_layer(value))

    def to_standard(self, grouped: Tensor) -> Tensor:
        return grouped

    def from_standard(self, grouped: Tensor) -> Tensor:
        return grouped

    def project(self, slot: int, projection: Tensor) -> Tensor:
        z = self._features(slot)
        logits = (z @ projection.to(z.dtype)).view(self.batch, -1, self.heads)  # (B, R_i, H)
        return logits.transpose(0, 1)  # (R_i, B, H)

    def project_backward(self, slot: int, projection: Tensor, logit_grads: Tensor) -> tuple[Tensor, Tensor]:
        grad = logit_grads.transpose(0, 1).reshape(self.batch, -1)  # (B, R_i * H)
        feature_grad = grad @ projection.float().t()  # (B, D)
        return feature_grad, (self._features(slot).float().t() @ grad).to(projection.dtype)

    def add_feature_grad(self, slot: int, feature_grad: Tensor) -> None:
        v = self.grads[:, slot].view(self.batch, self.heads, self.positions, -1)  # (B, H, P, D_h)
        v.add_(feature_grad.view(self.batch, self.heads, 1, -1) / self.positions)

    def mix(self, weights: Tensor, count: int) -> Tensor:
        w = weights.flatten(1).t().unsqueeze(1).to(self.values.dtype).contiguous()  # (B*H, 1, c)
        mixed = torch.bmm(w, self.values[:, :count])  # (B*H, 1, F)
        return self.layout.from_layer(mixed.view(self.batch, self.heads, *self.item_shape), self.native_ndim)

    def mix_backward(self, weights: Tensor, grad: Tensor, count: int) -> Tensor:
        g = self.layout.to_layer(grad).reshape(self.batch * self.heads, 1, -1)  # (B*H, 1, F)
        w = weights.flatten(1).t().unsqueeze(2)  # (B*H, c, 1)
        self.grads[:, :count].addcmul_(w, g)
        agreement = torch.bmm(self.values[:, :count], g.transpose(1, 2).to(self.values.dtype))  # (B*H, c, 1)
        return agreement.squeeze(-1).t().float().view_as(weights)

    def slot_grad(self, slot: int) -> Tensor:
        return self.layout.from_layer(self._slot(self.grads, slot), self.native_ndim)

    def _allocate_grads(self) -> Tensor:
        return torch.zeros(self.values.shape, device=self.values.device)


class PositionSlots(ManualMemory):
    """Component-wise (or causal layer-wise) memory of one forward pass.

    Logits are stored head-major, ``G = (H, B, *P)``, so a slot's logits against its readers come out
    of one matrix product ``M^T z^T`` ``(R_i * H, B * prod(P))`` already in buffer order.

    Args:
        layout: feature layout of the blocks' tensors.
        like: the input ``x`` (device, batch and positions).
        num_slots: ``S``, external slots included.
        counts: slots seen by each reader.
        key_dim: ``d_k`` (for the shape external keys must have).
        dtype: storage type of the values.
        causal: logits are running means over the sequence axis (causal layer-wise keys).
    """

    def __init__(
        self,
        layout: FeatureLayout,
        like: Tensor,
        num_slots: int,
        counts: Sequence[int],
        key_dim: int,
        dtype: torch.dtype,
        causal: bool,
    ) -> None:
        self.layout, self.native_ndim, self.causal = layout, like.dim(), causal
        self.axis = layout.feature_dim % like.dim()  # heads axis of the split layout; D_h follows it
        positions = layout.positions(like)
        self.features_shape = (like.shape[0], *positions, layout.dim)  # (B, *P, D)
        super().__init__(counts, (layout.heads, like.shape[0], *positions), like)
        self.key_shape = (like.shape[0], *positions, layout.heads, key_dim)
        split = list(like.shape)
        split[self.axis : self.axis + 1] = [layout.heads, layout.head_dim]
        self.values = torch.empty(num_slots, *split, dtype=dtype, device=like.device)  # (S, *split)
        self._values_raw = self.values.data
        if causal:
            self.steps = torch.arange(1, like.shape[1] + 1, device=like.device)  # (T,)
        self.scratch: Tensor | None = None

    def _features(self, slot: int) -> Tensor:
        """Features at every position: ``(B * prod(P), D)``."""
        return self.layout.features_last(self.layout.merge(self.values[slot])).reshape(-1, self.layout.dim)

    def _store(self, slot: int, value: Tensor) -> None:
        self._values_raw[slot].copy_(self.layout.split(value))

    def to_standard(self, grouped: Tensor) -> Tensor:
        return grouped.movedim(1, -1)  # (n, H, B, *P) -> (n, B, *P, H)

    def from_standard(self, grouped: Tensor) -> Tensor:
        return grouped.movedim(-1, 1)

    def _onto_split(self, weights: Tensor) -> Tensor:
        """``(c, H, B, *P)`` -> broadcastable onto ``(c, *split)`` (heads in place, 1 for ``D_h``)."""
        return weights.movedim(1, 1 + self.axis).unsqueeze(2 + self.axis)

    def project(self, slot: int, projection: Tensor) -> Tensor:
        z = self._features(slot)
        logits = torch.mm(projection.t().to(z.dtype), z.t()).float()  # (R_i * H, B * prod(P))
        logits = logits.view(-1, *self.group_shape)  # (R_i, H, B, *P)
        return logits.cumsum(-1) / self.steps if self.causal else logits  # running mean over T

    def project_backward(self, slot: int, projection: Tensor, logit_grads: Tensor) -> tuple[Tensor, Tensor]:
        if self.causal:  # adjoint of the running mean: divide, then sum from the end
            logit_grads = (logit_grads / self.steps).flip(-1).cumsum(-1).flip(-1)
        grad = logit_grads.reshape(projection.shape[-1], -1)  # (R_i * H, B * prod(P))
        feature_grad = torch.mm(grad.t(), projection.float().t())  # (B * prod(P), D)
        projection_grad = torch.mm(self._features(slot).float().t(), grad.t())  # (D, R_i * H)
        return feature_grad, projection_grad.to(projection.dtype)

    def add_feature_grad(self, slot: int, feature_grad: Tensor) -> None:
        grads = self.layout.features_last(self.layout.merge(self.grads[slot]))  # (B, *P, D)
        grads.add_(feature_grad.view(self.features_shape))

    def mix(self, weights: Tensor, count: int) -> Tensor:
        w = self._onto_split(weights)  # (c, *split) with D_h -> 1
        mixed = torch.mul(self.values[0], w[0])  # accumulates in fp32
        for i in range(1, count):
            mixed.addcmul_(self.values[i], w[i])
        return self.layout.merge(mixed.to(self.values.dtype))

    def mix_backward(self, weights: Tensor, grad: Tensor, count: int) -> Tensor:
        g = self.layout.split(grad)  # (*split)
        w = self._onto_split(weights)  # (c, *split) with D_h -> 1
        self.grads[:count].addcmul_(w, g)
        products = torch.mul(self.values[:count], g, out=self.scratch[:count])  # (c, *split)
        return products.sum(self.axis + 2).movedim(self.axis + 1, 1)  # (c, H, B, *P)

    def slot_grad(self, slot: int) -> Tensor:
        return self.layout.merge(self.grads[slot])

    def _allocate_grads(self) -> Tensor:
        self.scratch = torch.empty(self.values.shape, device=self.values.device)
        return torch.zeros(self.values.shape, device=self.values.device)
