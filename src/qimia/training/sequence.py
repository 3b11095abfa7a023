"""Masked bit-sequence tasks (the algorithmic tasks of :mod:`qimia.data.algorithmic`): the loss in
bits per sequence, and evaluation at every training length and at generalisation lengths.

The network is any sequence model ``net(inputs (B, T, I)) -> (logits (B, T, O), state)`` (NTM,
DNC, the LSTM baseline of :mod:`qimia.memory`). Metrics, each averaged over sequences:

* ``bits``: the masked binary cross-entropy summed over a sequence, in bits (the training loss);
* ``wrong_bits``: masked output bits whose prediction ``sigmoid(logit) > 0.5`` is wrong.

Logged as ``train/bits`` (every step), ``val/bits`` and ``val/wrong_bits`` (the mean over the
training lengths, one equal-size batch per length) and ``val/len<L>/bits``, ``val/len<L>/wrong_bits``
per generalisation length ``L``; the same under ``test/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.data.algorithmic import Batch
from qimia.training.base import TaskModule


class SequenceMetrics(NamedTuple):
    """Per-sequence metrics, both averaged over the batch.

    Attributes:
        bits_per_sequence: masked binary cross-entropy, summed over the sequence, in bits (differentiable).
        wrong_bits_per_sequence: number of masked output bits whose rounded prediction is wrong.
    """

    bits_per_sequence: Tensor
    wrong_bits_per_sequence: Tensor


def sequence_metrics(logits: Tensor, targets: Tensor, mask: Tensor) -> SequenceMetrics:
    """``bits = mean_b sum_{t,o} m[b,t] BCE(logits, targets) / ln 2`` and the wrong bits per sequence.

    Args:
        logits: ``(B, T, O)``; targets: ``(B, T, O)``; mask: ``(B, T)``.
    """
    m = mask.unsqueeze(-1)  # (B, T, 1)
    nats = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    bits = (nats * m).sum(dim=(1, 2)).mean() / math.log(2.0)
    wrong = (((logits > 0).float() != targets).float() * m).sum(dim=(1, 2)).mean()
    return SequenceMetrics(bits, wrong.detach())


class SequenceModule(TaskModule):
    """Trains a sequence model on bits per sequence; evaluates per length.

    Args:
        net: ``inputs (B, T, I) -> (logits (B, T, O), state)``.
        train_lengths: the task's training lengths (their mean is ``val/bits``).
        **kwargs: ``optimizer``, ``scheduler``, ``compile`` (see :class:`TaskModule`).
    """

    monitor, monitor_mode = "wrong_bits", "min"

    def __init__(self, net: nn.Module, train_lengths: Sequence[int], **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        self.train_lengths = frozenset(train_lengths)

    def step(self, batch: Batch, stage: str) -> Tensor:
        logits = self(batch.inputs)[0]  # (B, T, O)
        metrics = sequence_metrics(logits, batch.targets, batch.mask)
        size = batch.inputs.shape[0]
        if stage == "train":
            if not torch.isfinite(metrics.bits_per_sequence):
                raise FloatingPointError(
                    f"the loss became {metrics.bits_per_sequence.item()} at step {self.global_step}: lower "
                    "optimizer.lr or clip the gradients (trainer.gradient_clip_val), then resume from the last "
                    "good checkpoint with ckpt_path=<run folder>/checkpoints/last.ckpt.")
            self.log("train/bits", metrics.bits_per_sequence, on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=size)
            self.log("train/wrong_bits", metrics.wrong_bits_per_sequence, on_step=True, on_epoch=False, batch_size=size)
            return metrics.bits_per_sequence
        prefix = stage if batch.length in self.train_lengths else f"{stage}/len{batch.length}"
        # one equal-size batch per length: the epoch mean is the mean over lengths
        for name, value in (("bits", metrics.bits_per_sequence), ("wrong_bits", metrics.wrong_bits_per_sequence)):
            self.log(f"{prefix}/{name}", value, on_step=False, on_epoch=True, prog_bar=prefix == stage,
                     sync_dist=True, batch_size=size)
        return metrics.bits_per_sequence
