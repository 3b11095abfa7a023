"""Shared helpers for the qimia.dual tests: tiny models trained for real with recording."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qimia.dual.recorder import DualRecorder


class TinyCell(nn.Module):
    """Elman-style recurrent classifier: one nn.Linear on [h_{t-1}; x_t] used T times per forward."""

    def __init__(self, d_in: int = 5, d_h: int = 7, classes: int = 3) -> None:
        super().__init__()
        self.cell = nn.Linear(d_h + d_in, d_h)
        self.head = nn.Linear(d_h, classes)
        self.d_h = d_h

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_in)
        h = x.new_zeros(x.shape[0], self.d_h)
        for t in range(x.shape[1]):
            h = torch.tanh(self.cell(torch.cat([h, x[:, t]], -1)))      # (B, d_h)
        return self.head(h)


def train_recorded(model: nn.Module, opt: torch.optim.Optimizer, path: Path, x: torch.Tensor, y: torch.Tensor,
                   steps: int, batch: int = 16, clip: float | None = None, sched: object | None = None,
                   seed: int = 0, task: Callable[[int], int] = lambda s: 0, loss_sign: float = 1.0,
                   **kw) -> DualRecorder:
    """Train with cross-entropy for ``steps`` SGD steps while recording; returns the closed recorder."""
    rec = DualRecorder(model, opt, str(path), **kw)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        rec.set_batch(idx, labels=y[idx], task=task(step))
        loss = loss_sign * F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()
    rec.close()
    return rec


@pytest.fixture
def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """(200, 10) Gaussian blobs with 3 classes."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 10, generator=g) * 2
    y = torch.randint(0, 3, (200,), generator=g)
    return centers[y] + torch.randn(200, 10, generator=g), y


def mlp(d_in: int = 10, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, classes))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The helpers above (conftest modules are not importable under --import-mode=importlib)."""
    return SimpleNamespace(TinyCell=TinyCell, train_recorded=train_recorded, mlp=mlp, rel_err=rel_err)
