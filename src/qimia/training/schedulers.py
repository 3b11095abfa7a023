"""Learning-rate schedules torch does not have.

* :func:`warmup_cosine` needs the run's total number of optimizer steps: the LightningModule
  passes ``total_steps`` (from ``trainer.estimated_stepping_batches``) to any partial scheduler
  whose signature has that argument and does not fix it (this one, or ``OneCycleLR``).
* :class:`ReduceLROnTarget` steps on the validation metric, like ``ReduceLROnPlateau``, and is
  handed that metric by Lightning in the same way.
"""

from __future__ import annotations

import math
from typing import SupportsFloat

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction * total_steps`` steps, then cosine decay to
    ``min_lr_ratio * lr`` at ``total_steps``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}.")
    warmup = int(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


class ReduceLROnTarget(ReduceLROnPlateau):
    """Multiply every rate by ``factor`` once, at the first validation whose metric reaches
    ``target`` (``<= target`` in ``mode="min"``, ``>=`` in ``"max"``); constant otherwise.

    "A smaller step once solved": where ``ReduceLROnPlateau`` waits for ``patience`` evaluations
    without progress (which, on a solved task, is any ``patience`` evaluations after solving, and
    on a relapsing one may be never), this drops the rate the moment the task is solved. It is a
    ``ReduceLROnPlateau`` only so that Lightning steps it once per epoch with the monitored metric
    (and :class:`~qimia.training.base.TaskModule` sets its ``mode`` from the task); its rule is its own.

    Args:
        optimizer: the optimizer whose rates are lowered.
        target: the metric value that triggers the drop (e.g. 0.1 wrong bits per sequence).
        factor: the rate multiplier, in (0, 1).
        mode: ``"min"`` or ``"max"``, the metric's better direction.
    """

    def __init__(self, optimizer: Optimizer, target: float, factor: float = 0.1, mode: str = "min") -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}.")
        super().__init__(optimizer, mode=mode, factor=factor)
        self.target = float(target)
        self.reached_at: int | None = None  # the step (evaluation count) at which the rate dropped

    def step(self, metrics: SupportsFloat, epoch: None = None) -> None:  # type: ignore[override]
        self.last_epoch += 1
        value = float(metrics)
        reached = value <= self.target if self.mode == "min" else value >= self.target
        if reached and self.reached_at is None:
            self.reached_at = self.last_epoch
            for group in self.optimizer.param_groups:
                group["lr"] = float(group["lr"]) * self.factor
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]
