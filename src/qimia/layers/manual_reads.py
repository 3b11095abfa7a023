"""Value layouts and mixtures of the hand-written depth memory (:mod:`qimia.layers.manual_memory`).

``SampleSlots`` (layer-wise): one weight per sample and head. Values live in attention layout
``(B*H, S, F)`` with ``F = prod(P) * D_h``, so a phase's reads of its older slots are one batched
matrix product, ``P = U V[:, :c_0]`` ``(B*H, b, F)``, a reader's newer slots one more,
``w^T V[:, c_0:c]``; the backward is ``dV[:, :c_0] += W^T G`` and ``a = G V[:, :c_0]^T`` per phase
and an in-place multiply-add ``dV[:, c_0:c] += w g`` and ``a = g V[:, c_0:c]^T`` per reader. It
computes each slot's ``B`` pooled keys and their logits itself (keyed writes): fewer keys than readers,
so folding the queries into the key projections would cost more than it saves.

``PositionSlots`` (component-wise, and causal layer-wise): one weight per position and head. Values
stay slot-major in their native layout with the feature axis split into heads, ``(S, *split)``; a read
is ``sum_i w_i v_i`` accumulated slot by slot into one output that stays in cache, and its backward
is one in-place multiply-add into ``dV[:c]`` and one product-and-sum for ``a_i = <g, v_i>``.

Folded logits (``PositionSlots``): with ``M = W^T Q / sqrt(d_k)`` ``(D, H * R_i)`` the logits of slot
``i`` against its ``R_i`` readers are ``z_i M``, ``z_i`` the slot's features at every position; for
causal layer-wise reads, a running mean over the sequence follows, applied to the ``H * R_i`` logits
rather than to the ``D`` features (the two commute because both are linear). A slot has ``B * T``
key vectors, more than its readers, so the fold saves the key projection's work and its saved keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from qimia.layers.feature_layout import FeatureLayout
from qimia.layers.manual_memory import GradientPool, ManualMemory


class SampleSlots(ManualMemory):
    """Layer-wise memory of one forward pass.

    Args:
        layout: feature layout of the blocks' tensors.
        like: the input ``x`` (device, batch and positions).
        num_slots: ``S``, external slots included.
        counts: slots seen by each reader.
        key_dim: ``d_k`` (for the shape external keys must have).
        dtype: storage type of the values.
        phase: readers per phase of the two-phase reads (:class:`ManualMemory`).
        pool: where the gradient memory comes from (:class:`GradientPool`; ``None``: a new one per pass).
    """

    def __init__(
        self,
        layout: FeatureLayout,
        like: Tensor,
        num_slots: int,
        counts: Sequence[int],
        key_dim: int,
        dtype: torch.dtype,
        phase: int = 1,
        pool: GradientPool | None = None,
    ) -> None:
        self.layout, self.native_ndim = layout, like.dim()
        self.batch, self.heads = like.shape[0], layout.heads
        self.item_shape = (*layout.positions(like), layout.head_dim)  # (*P, D_h)
        self.positions = math.prod(self.item_shape[:-1])
        super().__init__(counts, (self.batch, self.heads), like, phase, pool)
        self.key_shape = (self.batch, self.heads, key_dim)
        shape = (self.batch * self.heads, num_slots, math.prod(self.item_shape))  # (B*H, S, F)
        self.values = torch.empty(shape, dtype=dtype, device=like.device)
        self._values_raw = self.values.data
        self._pooled: dict[int, Tensor] = {}
        self._keys: dict[int, Tensor] = {}

    def _slot(self, memory: Tensor, slot: int) -> Tensor:
        return memory[:, slot].view(self.batch, self.heads, *self.item_shape)  # (B, H, *P, D_h)

    def _store(self, slot: int, value: Tensor) -> None:
        self._slot(self._values_raw, slot).copy_(self.layout.to_layer(value))

    def _features(self, slot: int) -> Tensor:
        """Mean over positions: ``(B, D)`` fp32, kept for the backward (it is small)."""
        if slot not in self._pooled:
            v = self.values[:, slot].view(self.batch, self.heads, self.positions, -1)  # (B, H, P, D_h)
            self._pooled[slot] = v.float().mean(2).flatten(1)
        return self._pooled[slot]

    def key_logits(self, slot: int, weight: Tensor, queries: Tensor) -> Tensor:
        with torch.autocast(self.values.device.type, enabled=False):  # B keys: fp32 costs nothing here
            key = (self._features(slot) @ weight.float().t()).view(self.batch, self.heads, -1)  # (B, H, d_k)
            self._keys[slot] = key = key.transpose(0, 1).contiguous()  # (H, B, d_k), also for key_backward
            readers = queries.float().permute(1, 2, 0).contiguous()  # (H, d_k, R_i)
            return torch.bmm(key, readers).permute(2, 1, 0)  # (H, B, R_i) -> (R_i, B, H)

    def key_backward(self, slot: int, weight: Tensor, queries: Tensor, logit_grads: Tensor) -> tuple[Tensor, ...]:
        queries = queries.float().transpose(0, 1)  # (H, R_i, d_k)
        key_grad = torch.bmm(logit_grads.permute(2, 1, 0).contiguous(), queries.contiguous())  # (H, B, d_k)
        per_head = logit_grads.permute(2, 0, 1).contiguous()  # (H, R_i, B)
        query_grad = torch.bmm(per_head, self._keys[slot]).transpose(0, 1)  # (R_i, H, d_k)
        key_grad = key_grad.transpose(0, 1).reshape(self.batch, -1)  # (B, H * d_k)
        weight_grad = key_grad.t() @ self._features(slot)  # (H * d_k, D)
        return key_grad @ weight.float(), weight_grad.to(weight.dtype), query_grad

    def add_feature_grad(self, slot: int, feature_grad: Tensor) -> None:
        v = self.grads[:, slot].view(self.batch, self.heads, self.positions, -1)  # (B, H, P, D_h)
        v.add_(feature_grad.view(self.batch, self.heads, 1, -1) / self.positions)

    def to_standard(self, grouped: Tensor) -> Tensor:
        return grouped

    def from_standard(self, grouped: Tensor) -> Tensor:
        return grouped

    def mix(self, weights: Tensor, count: int) -> Tensor:
        w = weights.flatten(1).t().contiguous().unsqueeze(1).to(self.values.dtype)  # (B*H, 1, c)
        mixed = torch.bmm(w, self.values[:, :count])  # (B*H, 1, F)
        return self.layout.from_layer(mixed.view(self.batch, self.heads, *self.item_shape), self.native_ndim)

    def grad_layout(self, grad: Tensor) -> Tensor:
        return self.layout.to_layer(grad).reshape(self.batch * self.heads, 1, -1)  # (B*H, 1, F)

    def mix_old(self, weights: Tensor, old: int) -> Tensor:
        w = weights.flatten(2).permute(2, 0, 1).contiguous().to(self.values.dtype)  # (B*H, n, old)
        return torch.bmm(w, self.values[:, :old])  # (B*H, n, F)

    def mix_new(self, partial: Tensor, j: int, alpha: Tensor | None, weights: Tensor | None, old: int,
                count: int) -> Tensor:
        mixed = partial[:, j : j + 1]  # (B*H, 1, F)
        if alpha is not None:
            w = weights.flatten(1).t().contiguous().unsqueeze(1).to(self.values.dtype)  # (B*H, 1, k)
            new = torch.bmm(w, self.values[:, old:count])  # (B*H, 1, F)
            mixed = new.addcmul_(mixed, alpha.view(-1, 1, 1).to(mixed.dtype))
        return self.layout.from_layer(mixed.view(self.batch, self.heads, *self.item_shape), self.native_ndim)

    def stash(self, j: int, grad: Tensor) -> Tensor:
        self._slot(self.stashed, j).copy_(self.layout.to_layer(grad))
        return self.stashed[:, j : j + 1]  # (B*H, 1, F) fp32

    def mix_backward(self, weights: Tensor, grad: Tensor, start: int, count: int, overwrite: bool = False) -> Tensor:
        w = weights.flatten(1).t().unsqueeze(2)  # (B*H, k, 1)
        if overwrite:
            torch.mul(w, grad, out=self.grads[:, :count])
            self.grads[:, count:].zero_()
        else:
            self.grads[:, start:count].addcmul_(w, grad)
        values = self.values[:, start:count]
        agreement = torch.bmm(grad.to(values.dtype), values.transpose(1, 2))  # (B*H, 1, k): gemv, V^T in place
        return agreement.squeeze(1).t().float().view_as(weights)

    def inner(self, grad: Tensor, out: Tensor) -> Tensor:
        product = self.layout.to_layer(grad.float() * out)  # (B, H, *P, D_h)
        return product.sum(tuple(range(2, product.dim()))).unsqueeze(0)  # (1, B, H)

    def old_backward(self, js: Sequence[int], weights: Tensor, old: int) -> Tensor:
        n = len(js)
        if n == 1:  # one reader: in place, no (B*H, old, F) product
            return self.mix_backward(weights[0], self.stashed[:, js[0] : js[0] + 1], 0, old).unsqueeze(0)
        grads = self.stashed[:, :n] if list(js) == list(range(n)) else self.stashed[:, list(js)]  # (B*H, n, F)
        self.grads[:, :old] += torch.bmm(weights.flatten(2).permute(2, 1, 0), grads)  # dV += W^T G  (B*H, old, F)
        values = self.values[:, :old]
        agreement = torch.bmm(grads.to(values.dtype), values.transpose(1, 2))  # (B*H, n, old)
        return agreement.float().permute(1, 2, 0).reshape(weights.shape)

    def slot_grad(self, slot: int) -> Tensor:
        return self.layout.from_layer(self._slot(self.grads, slot), self.native_ndim)

    def _allocate_grads(self, zeroed: bool) -> Tensor:
        batch_heads, _, features = self.values.shape
        self.stashed = torch.empty(batch_heads, min(self.phase, len(self.counts)), features, device=self.values.device)
        return self.gradient_memory(zeroed)


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
        pool: where the gradient memory comes from (:class:`GradientPool`; ``None``: a new one per pass).

    Every reader reads alone: a phase's batched read would loop over the same slots, saving no pass.
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
        pool: GradientPool | None = None,
    ) -> None:
        self.layout, self.native_ndim, self.causal = layout, like.dim(), causal
        self.axis = layout.feature_dim % like.dim()  # heads axis of the split layout; D_h follows it
        positions = layout.positions(like)
        self.features_shape = (like.shape[0], *positions, layout.dim)  # (B, *P, D)
        super().__init__(counts, (layout.heads, like.shape[0], *positions), like, pool=pool)
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

    def grad_layout(self, grad: Tensor) -> Tensor:
        return self.layout.split(grad)  # (*split)

    def mix_backward(self, weights: Tensor, grad: Tensor, start: int, count: int, overwrite: bool = False) -> Tensor:
        w = self._onto_split(weights)  # (k, *split) with D_h -> 1
        if overwrite:
            torch.mul(w, grad, out=self.grads[:count])
            self.grads[count:].zero_()
        else:
            self.grads[start:count].addcmul_(w, grad)
        products = torch.mul(self.values[start:count], grad, out=self.scratch[: count - start])  # (k, *split)
        return products.sum(self.axis + 2).movedim(self.axis + 1, 1)  # (k, H, B, *P)

    def slot_grad(self, slot: int) -> Tensor:
        return self.layout.merge(self.grads[slot])

    def _allocate_grads(self, zeroed: bool) -> Tensor:
        self.scratch = torch.empty(self.values.shape, device=self.values.device)
        return self.gradient_memory(zeroed)
