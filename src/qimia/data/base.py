"""Shared pieces of every data module: a resumable shuffling sampler and in-memory image splits.

Every data module in :mod:`qimia.data` is a ``LightningDataModule`` that also exposes
``net_kwargs``: the facts about the data a network must be built with (``num_classes``,
``in_chans``, ``vocab_size``, ...). The experiment builder passes them to
:func:`qimia.models.create_model`, so a config never states them twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset


class EpochSeededSampler(Sampler[int]):
    """Random permutation drawn from ``(seed, epoch)`` only.

    The shuffle of epoch ``e`` does not depend on the global RNG, so a run resumed from a
    checkpoint sees exactly the batches the uninterrupted run would have seen. Lightning calls
    :meth:`set_epoch` at the start of every epoch (as it does for ``DistributedSampler``, which
    replaces this sampler under DDP and is seeded the same way).
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.num_samples = len(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class SplitDataModule(L.LightningDataModule):
    """A data module whose ``setup`` fills ``self.train_set``, ``self.val_set``, ``self.test_set``.

    Args:
        batch_size: samples per batch (per process under DDP).
        num_workers: DataLoader worker processes (0 loads in the main process).
        seed: seed of the training shuffle (see :class:`EpochSeededSampler`); the split of
            the data itself is fixed by each module's ``split_seed``, never by the run's seed.
    """

    #: the task a network trained on this data solves (``model.task`` must match)
    task: str | None = "classification"

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def net_kwargs(self) -> dict[str, Any]:
        """Constructor kwargs the network needs from the data (after :meth:`setup`)."""
        raise NotImplementedError

    @property
    def task_kwargs(self) -> dict[str, Any]:
        """Kwargs of the LightningModule that come from the data (classification: ``num_classes``)."""
        return {k: v for k, v in self.net_kwargs.items() if k == "num_classes"}

    def _eval_sampler(self, dataset: Dataset) -> Sampler[int] | None:
        """Under several processes, each evaluates its own shard and no sample twice.

        (Lightning's ``DistributedSampler`` pads the last batch with repeated samples so every
        rank gets as many; the synced metrics would then count those samples twice.)
        """
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                            shuffle=False)

    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called.")
        sampler = EpochSeededSampler(dataset, self.seed) if train else self._eval_sampler(dataset)  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=train and len(dataset) > self.batch_size,  # type: ignore[arg-type]
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


def split_indices(n: int, fractions: tuple[float, ...], split_seed: int) -> list[Tensor]:
    """A fixed random partition of ``range(n)`` into parts of the given fractions (the last
    part takes the remainder)."""
    if any(f <= 0 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"fractions must be positive and sum below 1, got {fractions}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    sizes = [int(round(f * n)) for f in fractions]
    parts, start = [], 0
    for size in sizes:
        parts.append(order[start : start + size])
        start += size
    parts.append(order[start:])
    return parts


def image_tensor_dataset(images: Tensor, labels: Tensor, mean: float, std: float) -> TensorDataset:
    """``images (N, C, H, W)`` in [0, 1], standardised with the training ``mean``/``std``."""
    return TensorDataset(((images - mean) / std).contiguous(), labels.long())
