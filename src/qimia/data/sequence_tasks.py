"""Generated sequence tasks, as data modules whose every item is a whole batch drawn from its own
seed (so batch ``i`` is the same in every run of that seed, on any number of workers):

* sequence labelling (the Universal Transformer's tasks; tokens ``1..vocab-1``, ``0`` is padding,
  lengths vary per sequence so ACT can spend different numbers of steps):
  ``reverse``: ``y[i] = x[L - 1 - i]``; ``sort``: ``y`` is ``x`` sorted ascending.
  :class:`SequenceTaskDataModule` yields ``(src (B, T), tgt (B, T), mask (B, T))``, mask True on
  real tokens; it has two test splits: the training lengths and longer ones.
* delayed copy (the recurrent network behind the sequential Jacobian): ``x ~ N(0, 1)`` of shape
  ``(B, T, 1)`` and ``y_t = x_{t - lag}`` (zero for ``t < lag``). :class:`DelayDataModule` yields
  ``(x, y)``.

Training draws ``steps`` fresh batches (one epoch) from the run's ``seed``; validation and test
batches come from ``eval_seed``, the same for every run.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

SEQUENCE_TASKS = ("reverse", "sort")


def sample_sequences(task: str, batch: int, min_len: int, max_len: int, vocab: int, gen: torch.Generator,
                     total_len: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One batch of ``task``: ``src (B, T)``, ``tgt (B, T)`` and the real-token mask ``(B, T)``,
    lengths uniform in ``[min_len, max_len]``, ``T = total_len or max_len``."""
    T = total_len or max_len
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=gen)  # (B,)
    pos = torch.arange(T)
    mask = pos[None] < lengths[:, None]  # (B, T)
    src = torch.randint(1, vocab, (batch, T), generator=gen) * mask
    if task == "reverse":
        idx = (lengths[:, None] - 1 - pos[None]).clamp(min=0)  # (B, T)
        tgt = torch.gather(src, 1, idx) * mask
    elif task == "sort":
        big = torch.where(mask, src, torch.full_like(src, vocab))  # padding sorts last
        tgt = big.sort(dim=1).values * mask
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {list(SEQUENCE_TASKS)}")
    return src, tgt, mask


def delayed_copy(batch: int, seq_len: int, lag: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``x (B, T, 1) ~ N(0, 1)`` and ``y_t = x_{t - lag}`` (zero before ``lag``)."""
    x = torch.randn(batch, seq_len, 1, generator=gen)
    return x, F.pad(x, (0, 0, lag, 0))[:, :seq_len]


class GeneratedBatches(Dataset):
    """``length`` batches; batch ``i`` is ``make(torch.Generator seeded from (seed, i))``."""

    def __init__(self, make: Callable[[torch.Generator], Any], length: int, seed: int) -> None:
        self.make, self.length, self.seed = make, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.make(torch.Generator().manual_seed(self.seed * 1_000_003 + index))


class _GeneratedDataModule(L.LightningDataModule):
    """Training, validation and test splits of generated batches (``batch_size=None`` loaders)."""

    def __init__(self, steps: int, batch_size: int, eval_batches: int, seed: int, eval_seed: int) -> None:
        super().__init__()
        for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_batches", eval_batches)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        self.steps, self.batch_size, self.eval_batches = steps, batch_size, eval_batches
        self.seed, self.eval_seed = seed, eval_seed

    @staticmethod
    def _batches(make: Callable[[torch.Generator], Any], length: int, seed: int) -> DataLoader:
        return DataLoader(GeneratedBatches(make, length, seed), batch_size=None)


class SequenceTaskDataModule(_GeneratedDataModule):
    """``reverse`` / ``sort`` batches.

    Args:
        task: ``reverse`` or ``sort``.
        min_len, max_len: training (and validation / first test split) lengths.
        test_len: the longer test split has lengths ``max_len + 1 .. test_len``.
        vocab: tokens ``0..vocab-1`` (``0`` is padding).
        steps: training batches; batch_size: sequences per batch.
        eval_batches: batches of each validation / test split.
        seed: seed of the training batches; eval_seed: of the validation and test batches.
    """

    #: names of the test splits, in the order of :meth:`test_dataloader`
    test_splits = ("test", "test_longer")

    def __init__(self, task: str = "reverse", min_len: int = 3, max_len: int = 10, test_len: int = 14,
                 vocab: int = 10, steps: int = 1000, batch_size: int = 32, eval_batches: int = 4, seed: int = 0,
                 eval_seed: int = 1000) -> None:
        super().__init__(steps, batch_size, eval_batches, seed, eval_seed)
        if task not in SEQUENCE_TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {list(SEQUENCE_TASKS)}")
        if min_len < 1:
            raise ValueError(f"min_len must be >= 1, got {min_len}.")
        if vocab < 2:
            raise ValueError(f"vocab must be >= 2 (token 0 is padding), got {vocab}.")
        if min_len > max_len:
            raise ValueError(f"need min_len <= max_len, got min_len={min_len}, max_len={max_len}.")
        if test_len <= max_len:
            raise ValueError(f"test_len must be > max_len (the longer split is lengths max_len+1..test_len), "
                             f"got test_len={test_len}, max_len={max_len}; raise test_len.")
        self.task, self.min_len, self.max_len, self.test_len, self.vocab = task, min_len, max_len, test_len, vocab

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {"vocab": self.vocab}

    def _make(self, min_len: int, max_len: int) -> Callable[[torch.Generator], Any]:
        return partial(sample_sequences, self.task, self.batch_size, min_len, max_len, self.vocab)

    def train_dataloader(self) -> DataLoader:
        return self._batches(self._make(self.min_len, self.max_len), self.steps, self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._batches(self._make(self.min_len, self.max_len), self.eval_batches, self.eval_seed)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._batches(self._make(self.min_len, self.max_len), self.eval_batches, self.eval_seed + 1),
                self._batches(self._make(self.max_len + 1, self.test_len), self.eval_batches, self.eval_seed + 2)]


class DelayDataModule(_GeneratedDataModule):
    """Delayed-copy batches ``(x (B, T, 1), y (B, T, 1))``, ``y_t = x_{t - lag}``.

    Args:
        seq_len: ``T``; lag: the delay, ``0 <= lag < seq_len``.
        steps, batch_size, eval_batches, seed, eval_seed: as :class:`SequenceTaskDataModule`.
    """

    test_splits = ("test",)

    def __init__(self, seq_len: int = 20, lag: int = 5, steps: int = 600, batch_size: int = 32,
                 eval_batches: int = 4, seed: int = 0, eval_seed: int = 1000) -> None:
        super().__init__(steps, batch_size, eval_batches, seed, eval_seed)
        if not 0 <= lag < seq_len:
            raise ValueError(f"need 0 <= lag < seq_len, got lag={lag}, seq_len={seq_len}.")
        self.seq_len, self.lag = seq_len, lag

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {}

    def _make(self) -> Callable[[torch.Generator], Any]:
        return partial(delayed_copy, self.batch_size, self.seq_len, self.lag)

    def train_dataloader(self) -> DataLoader:
        return self._batches(self._make(), self.steps, self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._batches(self._make(), self.eval_batches, self.eval_seed)

    def test_dataloader(self) -> DataLoader:
        return self._batches(self._make(), self.eval_batches, self.eval_seed + 1)
