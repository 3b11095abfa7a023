"""Shared pieces of the experiments: the MLP, a resumable SGD loop, evaluation."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from qimia.dual.recorder import DualRecorder

# step -> (inputs (B, ...), labels (B,), dataset indices (B,), task id)
BatchFn = Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]


def make_mlp(d_in: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """``d_in - hidden... - num_classes`` MLP with ReLU (the paper's 784-800-800-10)."""
    dims = [d_in, *hidden, num_classes]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def sgd_train(model: nn.Module, optimizer: torch.optim.Optimizer, batch_fn: BatchFn, steps: int, *,
              recorder: DualRecorder | None = None, start: int = 0, clip: float | None = None,
              scheduler: object | None = None, desc: str = "train", progress: bool = True) -> float:
    """Train for steps ``start..steps-1`` with cross-entropy; returns wall seconds."""
    model.train()
    t0 = time.perf_counter()
    for step in tqdm(range(start, steps), desc=desc, disable=not progress, leave=False):
        xb, yb, ids, task = batch_fn(step)
        if recorder is not None:
            recorder.set_batch(ids, labels=yb, task=task)
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return time.perf_counter() - t0


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> float:
    """Top-1 accuracy in percent."""
    was = model.training
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    model.train(was)
    return 100.0 * correct / len(x)
