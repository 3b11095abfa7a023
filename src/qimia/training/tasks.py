"""The three tasks of the model families: classification, language modelling, denoising.

Each is a thin :class:`~qimia.training.base.TaskModule`: how a batch becomes a loss and which
metrics to log under ``<stage>/<name>`` (stage = ``train``, ``val``, ``test``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from qimia.training.base import TaskModule

STAGES = ("train", "val", "test")


class ClassificationModule(TaskModule):
    """Cross-entropy on ``net(images) (B, num_classes)``; logs ``loss`` and ``acc``.

    Args:
        num_classes: classes of the accuracy metric.
        label_smoothing: of the training loss only (evaluation loss is plain cross-entropy).
        **kwargs: ``net``, ``optimizer``, ``scheduler``, ``compile`` (see ``TaskModule``).
    """

    monitor, monitor_mode = "acc", "max"

    def __init__(self, net: nn.Module, num_classes: int, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        self.label_smoothing = label_smoothing
        self.accuracy = nn.ModuleDict({f"{s}_acc": MulticlassAccuracy(num_classes, average="micro") for s in STAGES})

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch  # (B, C, H, W), (B,)
        logits = self(images)  # (B, num_classes)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        accuracy = self.accuracy[f"{stage}_acc"]
        accuracy(logits.detach(), labels)
        train = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=True, sync_dist=not train, batch_size=len(labels))
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss


class LanguageModelModule(TaskModule):
    """Next-token cross-entropy on ``net(tokens) (B, T, V)`` over the scored targets; logs ``loss``
    (nats per scored token), ``ppl = exp(loss)``, ``bpc = loss / (ln 2 * chars_per_token)`` and
    ``acc`` (argmax accuracy over the scored targets: next-character accuracy for plain text) per
    epoch, each synced across processes.

    A target ``-100`` (``IGNORE_INDEX``) is not scored: it adds nothing to the loss or the metrics
    (tasks that ask questions, such as :mod:`qimia.data.chunking`, score the answers only).

    Args:
        chars_per_token: characters per token of the evaluation text (1 for characters; from
            the data module for BPE), so ``bpc`` is exact for any tokenizer.
        monitor: the headline metric, ``"bpc"`` (default), ``"loss"`` (both minimised) or ``"acc"``
            (maximised); a data module may choose it through its ``task_kwargs``.
        **kwargs: ``net``, ``optimizer``, ``scheduler``, ``compile``.
    """

    monitor, monitor_mode = "bpc", "min"  # class defaults; an instance's follow its ``monitor``
    MONITORS = ("bpc", "acc", "loss")
    IGNORE_INDEX = -100

    def __init__(self, net: nn.Module, chars_per_token: float = 1.0, monitor: str = "bpc", **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        if chars_per_token <= 0:
            raise ValueError(f"chars_per_token must be positive, got {chars_per_token}.")
        if monitor not in self.MONITORS:
            raise ValueError(f"monitor must be one of {list(self.MONITORS)}, got {monitor!r}; set task.monitor=bpc, "
                             "task.monitor=acc or task.monitor=loss.")
        self.chars_per_token = chars_per_token
        self.monitor, self.monitor_mode = monitor, "max" if monitor == "acc" else "min"
        self.nats = nn.ModuleDict({f"{s}_nats": MeanMetric() for s in STAGES})
        self.accuracy = nn.ModuleDict({f"{s}_acc": MeanMetric() for s in STAGES})

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        inputs, targets = batch  # (B, T), (B, T); -100 where a target is not scored
        logits = self(inputs)  # (B, T, V)
        flat_logits, flat_targets = logits.flatten(0, 1).float(), targets.flatten()  # (B*T, V), (B*T,)
        scored = (flat_targets != self.IGNORE_INDEX).float()  # (B*T,)
        count = scored.sum()
        total = F.cross_entropy(flat_logits, flat_targets, ignore_index=self.IGNORE_INDEX, reduction="sum")
        loss = total / count.clamp(min=1)  # mean over scored targets (0, without a gradient, if none)
        self.nats[f"{stage}_nats"].update(loss.detach(), weight=count)
        right = (flat_logits.detach().argmax(-1) == flat_targets).float()  # never right where ignored
        self.accuracy[f"{stage}_acc"].update(right, weight=scored)
        if stage == "train":
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _log_epoch(self, stage: str) -> None:
        metric, accuracy = self.nats[f"{stage}_nats"], self.accuracy[f"{stage}_acc"]
        nats, acc = metric.compute(), accuracy.compute()  # synced across processes
        metric.reset()
        accuracy.reset()
        self.log(f"{stage}/loss", nats, prog_bar=stage != "train")
        self.log(f"{stage}/ppl", torch.exp(nats))
        self.log(f"{stage}/bpc", nats / (math.log(2) * self.chars_per_token), prog_bar=stage != "train")
        self.log(f"{stage}/acc", acc, prog_bar=stage != "train" and self.monitor == "acc")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")


class DenoisingModule(TaskModule):
    """Mean squared error between ``net(noisy)`` and the clean image; logs ``loss``, ``psnr``
    and ``ssim`` of the estimate clamped to [0, 1], and ``psnr_noisy`` of the input as the
    reference the network must beat.
    """

    monitor, monitor_mode = "psnr", "max"

    def __init__(self, net: nn.Module, **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        self.psnr = nn.ModuleDict({f"{s}_psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)) for s in STAGES})
        self.psnr_noisy = nn.ModuleDict({f"{s}_psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)) for s in STAGES})
        self.ssim = nn.ModuleDict({f"{s}_ssim": StructuralSimilarityIndexMeasure(data_range=1.0) for s in STAGES})

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        noisy, clean = batch  # (B, C, H, W) each
        estimate = self(noisy)  # (B, C, H, W)
        loss = F.mse_loss(estimate.float(), clean)
        train, n = stage == "train", len(clean)
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=True, sync_dist=not train, batch_size=n)
        if not train:  # image metrics on the evaluation sets (SSIM is costly)
            shown = estimate.detach().float().clamp(0, 1)
            for name, table, prediction in (
                ("psnr", self.psnr, shown),
                ("ssim", self.ssim, shown),
                ("psnr_noisy", self.psnr_noisy, noisy.clamp(0, 1)),
            ):
                metric = table[f"{stage}_{name.split('_')[0]}"]
                metric(prediction, clean)
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "psnr", batch_size=n)
        return loss


TASKS: dict[str, type[TaskModule]] = {
    "classification": ClassificationModule,
    "language_modeling": LanguageModelModule,
    "denoising": DenoisingModule,
}
