"""The one LightningModule all tasks share: a pure ``nn.Module`` plus a loss, metrics and the
optimizer/scheduler factories from the config.

Tasks (classification, language modelling, denoising) subclass it and only say how a batch
becomes a loss and which metrics to log; the network stays a plain ``nn.Module`` from
:func:`qimia.models.create_model`, usable without Lightning.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from qimia.models.mixers import no_decay_parameters

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def _fixed_kwargs(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword arguments a (partial) factory already fixes."""
    return getattr(factory, "keywords", {}) or {}


def _wants_total_steps(factory: Callable[..., Any]) -> bool:
    """Whether a (partial) scheduler factory takes ``total_steps`` and has not been given it."""
    fixed = _fixed_kwargs(factory)
    target = getattr(factory, "func", factory)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "total_steps" in params and "total_steps" not in fixed


def _is_plateau(factory: Callable[..., Any]) -> bool:
    """Whether a (partial) scheduler factory builds a ``ReduceLROnPlateau`` (or a subclass such as
    :class:`~qimia.training.schedulers.ReduceLROnTarget`), which steps on a metric."""
    target = getattr(factory, "func", factory)
    return isinstance(target, type) and issubclass(target, torch.optim.lr_scheduler.ReduceLROnPlateau)


class TaskModule(L.LightningModule):
    """Shared training loop glue.

    Args:
        net: the network (kept out of the saved hyper-parameters).
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_`` such as ``torch.optim.AdamW``).
        scheduler: ``optimizer -> LRScheduler`` or ``None``; stepped every optimizer step, except
            ``ReduceLROnPlateau`` and its subclasses (``ReduceLROnTarget``), stepped once per epoch on
            ``val/<monitor>`` (their ``mode`` is the monitor's unless the config fixes it).
        compile: wrap ``net`` in ``torch.compile`` for training and evaluation.
    """

    #: name of the metric compared across models (logged as ``test/<monitor>``) and its direction
    monitor: str = "loss"
    monitor_mode: str = "min"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        # The network's own config lives with the run (config.yaml); the factories are code, not
        # hyper-parameters, and would make checkpoints unloadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.compiled = compile
        self._forward: Callable[[Tensor], Tensor] = torch.compile(net) if compile else net

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x)

    # subclasses: a batch -> (loss, {metric name: value}) for one stage
    def step(self, batch: Any, stage: str) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=parameter_groups(self.net))
        if self.scheduler_factory is None:
            return optimizer
        if _is_plateau(self.scheduler_factory):
            mode = {} if "mode" in _fixed_kwargs(self.scheduler_factory) else {"mode": self.monitor_mode}
            scheduler = self.scheduler_factory(optimizer, **mode)
            if scheduler.mode != self.monitor_mode:
                raise ValueError(
                    f"scheduler.mode={scheduler.mode!r} but val/{self.monitor} is better when "
                    f"{self.monitor_mode}imised: drop scheduler.mode or set it to {self.monitor_mode!r}."
                )
            plateau = {"scheduler": scheduler, "interval": "epoch", "monitor": f"val/{self.monitor}"}
            return {"optimizer": optimizer, "lr_scheduler": plateau}
        if _wants_total_steps(self.scheduler_factory):
            scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        else:
            scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parameter_groups(net: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weight matrices and kernels decay; biases, norm gains and
    the depth mixers' own weights (each mixer's ``MixerSpec.no_decay``: QIMIA's queries, whose decay
    would pull the reads towards uniform averaging, DenseFormer's identity-initialised weights, ...)
    get ``weight_decay=0``.

    Frozen parameters (a transfer head's base) are left out.
    """
    mixer_weights = no_decay_parameters(net)
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name in mixer_weights else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
