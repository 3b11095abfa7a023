"""What the dual-form experiments share: the MLP, training with recording through the one
training engine (:func:`qimia.training.engine.fit` plus the
:class:`~qimia.dual.lightning.DualRecorderCallback`), evaluation and the run's command line."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn


def make_mlp(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """``(B, ...) -> flatten -> in_features - hidden... - num_classes`` MLP with ReLU (the paper's
    784-800-800-10); its ``nn.Linear`` layers are the recorded layers 0, 1, ..."""
    dims = [in_features, *hidden, num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> float:
    """Top-1 accuracy of ``model(x)`` in percent (eval mode, restored afterwards)."""
    was = model.training
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    model.train(was)
    return 100.0 * correct / len(x)


def check_budget(cfg: DictConfig) -> None:
    """Refuse a training budget that takes no optimizer step (nothing to record).

    Raises:
        ValueError: ``trainer.max_steps`` is 0 or below -1, or -1 without ``trainer.max_epochs >= 1``.
    """
    steps, epochs = cfg.trainer.max_steps, cfg.trainer.max_epochs
    if steps == -1 and epochs is not None and epochs >= 1:
        return
    if steps < 1:
        raise ValueError(f"trainer.max_steps={steps} (trainer.max_epochs={epochs}) trains no step, so there is no "
                         "memory to record or explain: pass trainer.max_steps=<N >= 1>.")


def check_not_resumed(cfg: DictConfig) -> None:
    """A recording starts with the run (its ``W_0`` is the initial weights): refuse ``ckpt_path``."""
    if cfg.ckpt_path not in (None, ""):
        raise ValueError(f"ckpt_path={cfg.ckpt_path!r}: a dual-form recording cannot continue from a Lightning "
                         "checkpoint (its store starts at W_0); run again without ckpt_path.")


def with_seed(cfg: DictConfig, seed: int) -> DictConfig:
    """A copy of ``cfg`` with ``seed`` set (one training run of a several-seed experiment)."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    copy.seed = int(seed)
    return copy


def train_recorded(cfg: DictConfig, module: Any, run_dir: Path, store_path: Path,
                   batch_meta: Callable[[Any, int], tuple[Any, Any, Any]], train_loader: Any, *,
                   val_loaders: Any = None, callbacks: Sequence[Any] = (), info: dict | None = None) -> tuple[Any, Any]:
    """Fit ``module`` with :func:`qimia.training.engine.fit` in ``run_dir`` while a
    :class:`~qimia.dual.lightning.DualRecorderCallback` records every ``nn.Linear`` into
    ``store_path`` (options from ``cfg.record``); returns ``(trainer, store)``.

    Raises:
        ValueError: the run took no optimizer step (raised by ``fit``).
        RuntimeError: training was interrupted (the store was not closed).
    """
    from qimia.dual.lightning import DualRecorderCallback
    from qimia.training.engine import fit

    layers = cfg.record.get("layers")
    recorder = DualRecorderCallback(str(store_path), batch_meta, dtype=cfg.record.dtype,
                                    layers=list(layers) if layers is not None else None,
                                    flush_every=cfg.record.flush_every, check_gradients=cfg.record.check_gradients,
                                    overwrite=True, info=info or {})
    trainer = fit(cfg, module, run_dir, train_dataloaders=train_loader, val_dataloaders=val_loaders,
                  callbacks=[recorder, *callbacks])
    if trainer.interrupted or recorder.store is None:
        raise RuntimeError(f"training was interrupted: the recording in {store_path} is incomplete.")
    return trainer, recorder.store


def command_line() -> str:
    """The ``qimia ...`` command of the running Hydra job, with its overrides (what regenerates
    its outputs)."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    folders = [o for o in hydra.overrides.hydra if o.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    return " ".join(["qimia", *hydra.job.name.split("_", 1), *hydra.overrides.task, *folders])


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
