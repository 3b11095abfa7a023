"""Callbacks: training throughput, fit time, metric history (learning curves), resumable RNG state and logger step."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor


def batch_items(batch: Any, unit: str) -> int:
    """Items in a batch: samples (``"samples"``) or input tokens (``"tokens"``)."""
    inputs: Tensor = batch[0]
    return int(inputs.numel()) if unit == "tokens" else int(inputs.shape[0])


class Throughput(L.Callback):
    """Items per second of the optimisation steps (forward, backward, update; data loading
    excluded): items per step over the *median* step time after ``warmup`` steps, so a stall
    caused by another process on a shared machine does not swing the estimate.

    Args:
        unit: ``"samples"`` (images) or ``"tokens"`` (language models).
        warmup: first steps excluded (allocations, compilation).
    """

    def __init__(self, unit: str = "samples", warmup: int = 5) -> None:
        if unit not in ("samples", "tokens"):
            raise ValueError(f"unit must be 'samples' or 'tokens', got {unit!r}.")
        self.unit, self.warmup = unit, warmup
        self.steps = 0
        self.seconds: list[float] = []  # per measured step
        self.items: list[int] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        elapsed = time.perf_counter() - self._start
        self.steps += 1
        if self.steps > self.warmup:
            self.items.append(batch_items(batch, self.unit) * trainer.world_size)
            self.seconds.append(elapsed)

    @property
    def per_second(self) -> float:
        """Median items per step over median seconds per step (NaN before ``warmup`` steps)."""
        if not self.seconds:
            return float("nan")
        return statistics.median(self.items) / statistics.median(self.seconds)


class FitClock(L.Callback):
    """Wall seconds of a fit, summed over its resumes.

    ``trainer.fit`` of a resumed run covers only its last part. The clock stores the seconds spent up
    to each checkpoint in that checkpoint and starts from them on resume, so :attr:`seconds` is the
    whole fit's time: every part's, less the time between an interruption and the checkpoint before
    it (which that part trains again).
    """

    def __init__(self) -> None:
        self._before = 0.0  # seconds of the earlier parts, from the checkpoint resumed
        self._start: float | None = None
        self._end: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._end = time.perf_counter(), None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds of the fit so far (earlier parts included)."""
        if self._start is None:
            return self._before
        return self._before + ((self._end if self._end is not None else time.perf_counter()) - self._start)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._before = float(state_dict["seconds"])


class MetricHistory(L.Callback):
    """Every validation epoch's metrics (``val/...``) and every logged training loss, with the
    global step: the learning curves of ``qimia compare``."""

    def __init__(self) -> None:
        self.val: list[dict[str, float]] = []
        self.train: list[dict[str, float]] = []

    @staticmethod
    def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
        return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and torch.as_tensor(v).numel() == 1}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.val.append({"step": trainer.global_step, "epoch": trainer.current_epoch})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.val:
            return
        self.val[-1].update(self._scalars(trainer.callback_metrics, "val/"))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.train.append({"step": trainer.global_step, "loss": float(loss)})

    def state_dict(self) -> dict[str, Any]:
        return {"val": self.val, "train": self.train}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.val, self.train = list(state_dict["val"]), list(state_dict["train"])


class RNGState(L.Callback):
    """Save the Python, NumPy and torch RNG states in every checkpoint and restore them on
    resume, so dropout and augmentation draw the same numbers as in an uninterrupted run."""

    def state_dict(self) -> dict[str, Any]:
        # only tensors and Python scalars: checkpoints stay loadable with torch.load(weights_only=True)
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        python = state_dict["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict.get("cuda", [])
        if cuda and torch.cuda.is_available():
            if len(cuda) != torch.cuda.device_count():
                raise RuntimeError(
                    f"the checkpoint holds the RNG state of {len(cuda)} CUDA devices but this process sees "
                    f"{torch.cuda.device_count()}: resume on the same devices for an exact continuation."
                )
            torch.cuda.set_rng_state_all(cuda)


class ResumedLoggerStep(L.Callback):
    """Keep the loggers' step equal to ``global_step`` after a resume.

    Lightning (2.6) logs every metric at ``fit_loop.epoch_loop._batches_that_stepped``, which with
    automatic optimization (every qimia module) equals ``trainer.global_step`` when a batch starts.
    A fit resumed from a checkpoint written at the end of an epoch of an iterable loader (the
    memory tasks) counts that batch twice (``_TrainingEpochLoop.reset`` adds one for a checkpoint
    saved on validation end; Lightning-AI/pytorch-lightning#19367), so every row logged after the
    resume lands one step late and the learning curve is shifted. This restores the invariant at
    the first batch (it changes nothing in an uninterrupted run).
    """

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        loop = trainer.fit_loop.epoch_loop
        if pl_module.automatic_optimization and loop._batches_that_stepped != trainer.global_step:
            loop._batches_that_stepped = trainer.global_step


class RunProgress(L.Callback):
    """One line per validation (and one at the end) instead of progress bars: what a terminal
    running many runs can show, e.g. ``[compare] qimia seed 1: epoch 2/10, step 180, val/acc 0.953, 41 s``.

    Args:
        label: the line's prefix, naming the run.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def _line(self, trainer: L.Trainer, what: str, epoch: int, end: str = "") -> None:
        if not trainer.is_global_zero:
            return
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        metrics = ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items())
                            if k.startswith(what) and torch.as_tensor(v).numel() == 1)
        print(f"{self.label}: epoch {epoch}{epochs}, step {trainer.global_step}"
              f"{', ' + metrics if metrics else ''}, {time.perf_counter() - self._start:.0f} s{end}", flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._line(trainer, "val/", trainer.current_epoch + 1)  # (the epoch under way)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._line(trainer, "train/", trainer.current_epoch, end=", done")  # (epochs completed)
