"""The one training engine: every run of every system is a Lightning ``Trainer`` built here.

    trainer = fit(cfg, module, run_dir, datamodule=dm)        # seeded, logged, checkpointed, resumable
    metrics = test(trainer, module, datamodule=dm)            # {"test/acc": ...}

``cfg`` is a composed qimia config: it carries ``seed``, ``threads``, ``ckpt_path``, ``checkpoint``
and the ``logger`` group (from ``conf/shared/app.yaml``) and the ``trainer``, ``optimizer`` and ``scheduler``
groups (``conf/shared/``). Optimizers and schedulers are Hydra ``_partial_`` factories, so any
torch optimizer with any argument is a command-line override (``optimizer=rmsprop
optimizer.alpha=0.95``), and clipping by norm or by value is Lightning's
(``trainer.gradient_clip_val=10 trainer.gradient_clip_algorithm=value``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qimia.training.callbacks import ResumedLoggerStep, RNGState


def optimizer_factory(cfg: DictConfig) -> Any:
    """``cfg.optimizer`` as a ``params -> Optimizer`` factory.

    Raises:
        ValueError: the optimizer config is not a ``_partial_`` factory.
    """
    if not OmegaConf.select(cfg, "optimizer._partial_", default=False):
        raise ValueError("optimizer must be a partial factory: set optimizer._partial_=true (see conf/shared/optimizer/).")
    return instantiate(cfg.optimizer)


def scheduler_factory(cfg: DictConfig) -> Any:
    """``cfg.scheduler`` as an ``optimizer -> LRScheduler`` factory, ``None`` for a constant rate."""
    if cfg.get("scheduler") is None or len(cfg.scheduler) == 0:
        return None
    return instantiate(cfg.scheduler)


def build_loggers(cfg: DictConfig, output_dir: Path) -> list:
    """The loggers of the ``logger`` group (``logger=[csv,tensorboard]``, ``logger=wandb``,
    ``logger=[]`` for none), each writing under ``output_dir``."""
    chosen = cfg.get("logger") or {}
    return [instantiate(node, save_dir=str(output_dir)) for node in chosen.values()]


def build_trainer(cfg: DictConfig, output_dir: Path, callbacks: Sequence[L.Callback] = (), *,
                  resume: str | None = None) -> L.Trainer:
    """``cfg.trainer`` with ``last.ckpt`` under ``output_dir/checkpoints``, the loggers (which
    also receive the hyper-parameters and, per step, the learning rate), ``callbacks``, any
    callbacks of the config (``+trainer.callbacks=[{_target_: ...}]``) and
    :class:`~qimia.training.callbacks.RNGState`, so a resumed run draws the same random numbers
    as an uninterrupted one (and :class:`~qimia.training.callbacks.ResumedLoggerStep`, so it logs
    them at the same steps). With ``resume`` (the checkpoint a fit resumes from) the CSV logger
    keeps the rows that checkpoint covers."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from qimia.training.loggers import CSVLogger

    by_steps = cfg.checkpoint.every_n_train_steps
    checkpoint = ModelCheckpoint(
        dirpath=str(output_dir / "checkpoints"),
        save_top_k=1,  # no monitor: the latest checkpoint, "last.ckpt" links to it
        save_last="link",
        every_n_epochs=None if by_steps else cfg.checkpoint.every_n_epochs,
        every_n_train_steps=by_steps,
        save_on_train_epoch_end=True,
    )
    loggers = build_loggers(cfg, output_dir)
    if resume is not None:
        progress = torch.load(resume, map_location="cpu", weights_only=True, mmap=True)
        for logger in loggers:
            if isinstance(logger, CSVLogger):
                logger.resume_from(progress["epoch"], progress["global_step"])
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # each logger flattens the tree
    user = [instantiate(c) for c in cfg.trainer.get("callbacks") or []]
    ours = [checkpoint, RNGState(), ResumedLoggerStep(), *callbacks, *([LearningRateMonitor("step")] if loggers else [])]
    return instantiate(cfg.trainer, callbacks=[*ours, *user], logger=loggers or False, default_root_dir=str(output_dir))


def resume_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``cfg.ckpt_path`` as a file (``"last"``: ``output_dir/checkpoints/last.ckpt``), ``None``
    for a fresh run.

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: the file is not a Lightning checkpoint (read with ``weights_only=True``).
    """
    if cfg.ckpt_path in (None, ""):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r}: no checkpoint at {path}.")
    try:
        progress = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear answer
        raise ValueError(f"ckpt_path={cfg.ckpt_path!r}: {path} is not a readable checkpoint ({err}). Pass the "
                         "last.ckpt of a run of this command.") from None
    if not isinstance(progress, dict) or not {"state_dict", "global_step", "epoch"} <= set(progress):
        raise ValueError(f"ckpt_path={cfg.ckpt_path!r}: {path} is not a Lightning checkpoint (no state_dict, "
                         "global_step, epoch). Pass the last.ckpt of a run of this command.")
    return str(path)


# keys a resumed run may change: the budget, where and how it runs, what it logs, which comparison
# it belongs to (one run's own arm and seed are fixed by its folder)
RESUMABLE_CHANGES = ("ckpt_path", "threads", "logger", "test", "trainer.max_epochs", "trainer.max_steps",
                     "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.limit_test_batches",
                     "trainer.callbacks", "seeds", "command", "compare")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def check_resume_config(cfg: DictConfig, output_dir: Path) -> None:
    """Refuse to resume a run folder with a config that changes what was trained there.

    Raises:
        ValueError: a key outside :data:`RESUMABLE_CHANGES` differs from the folder's ``config.yaml``.
    """
    saved_path = output_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = _flat(OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True))
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k)
                     and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ValueError(
            f"resuming {output_dir} with a different config ({detail}{', ...' if len(changed) > 6 else ''}): the "
            "checkpoint was trained with the folder's config.yaml. Resume with the same overrides, or start a new "
            "run folder."
        )


def seed_run(cfg: DictConfig) -> None:
    """``torch.set_num_threads(cfg.threads)`` (if set) and seed every generator with ``cfg.seed``."""
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)


def fit(
    cfg: DictConfig,
    module: L.LightningModule,
    output_dir: str | Path,
    *,
    datamodule: L.LightningDataModule | None = None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    callbacks: Sequence[L.Callback] = (),
) -> L.Trainer:
    """Fit ``module`` with the trainer of ``cfg`` in ``output_dir`` (resuming from
    ``cfg.ckpt_path``, with the folder's config: :func:`check_resume_config`); writes the resolved
    ``config.yaml`` there first. Call :func:`seed_run`
    before building the module so its initialisation is seeded too.

    Returns the trainer (for :func:`test`, ``trainer.interrupted``, ``trainer.global_rank``).
    """
    output_dir = Path(output_dir)
    resume = resume_path(cfg, output_dir)
    if resume is not None:
        check_resume_config(cfg, output_dir)
    trainer = build_trainer(cfg, output_dir, callbacks, resume=resume)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    trainer.fit(module, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders, datamodule=datamodule,
                ckpt_path=resume)
    if trainer.global_step == 0 and not trainer.interrupted:
        raise ValueError(
            f"nothing was trained (trainer.max_epochs={cfg.trainer.get('max_epochs')}, "
            f"trainer.max_steps={cfg.trainer.get('max_steps')}): every result would be that of the untrained model. "
            "Train for at least one step."
        )
    return trainer


def test(trainer: L.Trainer, module: L.LightningModule, *, datamodule: Any = None, dataloaders: Any = None) -> dict[str, float]:
    """The test metrics of ``module``'s current weights (``{}`` if training was interrupted); the
    table of them is printed on rank 0 of runs that show progress bars."""
    if trainer.interrupted:
        return {}
    verbose = trainer.is_global_zero and trainer.progress_bar_callback is not None
    per_loader = trainer.test(module, dataloaders=dataloaders, datamodule=datamodule, verbose=verbose)
    return {k: float(v) for metrics in per_loader for k, v in metrics.items()}  # (several test sets: their keys)
