from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyClassifier(nn.Module):
    """A stand-in network: (B, 1, 4, 4) -> (B, 3); records the dtype its linear layer computes in."""

    task = "classification"

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)
        self.seen_dtypes: list[torch.dtype] = []

    def forward(self, x):
        out = self.fc(x.flatten(1))
        self.seen_dtypes.append(out.dtype)
        return out


def make_trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture
def adam():
    return functools.partial(torch.optim.Adam, lr=1e-2)


@pytest.fixture
def image_loader():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 4, 4, generator=g), torch.randint(0, 3, (24,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


@pytest.fixture
def trainer_factory():
    return make_trainer


@pytest.fixture
def tiny_classifier():
    return TinyClassifier
