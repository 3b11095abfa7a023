"""``qimia.training.sequence.SequenceModule``: the loss, what it logs, and a clear stop on NaN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qimia.data.algorithmic import CopyTask
from qimia.training.sequence import SequenceModule, sequence_metrics


class Constant(nn.Module):
    """Logits ``value`` everywhere; one parameter so an optimizer can be built."""

    def __init__(self, value: float, size: int = 8) -> None:
        super().__init__()
        self.value, self.size = value, size
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, inputs):
        return torch.full((*inputs.shape[:2], self.size), self.value) + self.bias, None


def module(value: float) -> SequenceModule:
    return SequenceModule(Constant(value), [1, 2], optimizer=torch.optim.SGD)


def test_training_loss_is_bits_per_sequence():
    batch = CopyTask().sample(3, 2, torch.Generator().manual_seed(0))
    m = module(0.0)
    loss = m.step(batch, "train")
    expected = sequence_metrics(torch.zeros(3, 5, 8), batch.targets, batch.mask).bits_per_sequence
    torch.testing.assert_close(loss, expected)
    assert loss.item() == pytest.approx(16.0)  # 2 vectors of 8 bits at 1 bit each


def test_non_finite_loss_stops_with_the_fix():
    batch = CopyTask().sample(3, 2, torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="lower optimizer.lr.*ckpt_path"):
        module(float("nan")).step(batch, "train")
