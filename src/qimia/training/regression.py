"""Regression: mean squared error of a network's output against the target (the delayed copy
behind the sequential Jacobian of ``qimia memory jacobian``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from qimia.training.base import TaskModule


class RegressionModule(TaskModule):
    """Mean squared error of ``net(x)`` against ``y`` (any matching shapes, e.g. ``(B, T, D)``);
    logs ``loss`` per split."""

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        train = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=True, sync_dist=not train,
                 batch_size=len(x))
        return loss
