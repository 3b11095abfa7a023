"""A class subset of another data module, relabelled: MNIST digits 0-4 for a base network, 5-9
with few labels for the transfer heads.

    source = MNISTDataModule(path="data/mnist.pkl.gz")
    LabelSubsetDataModule(source, labels=[5, 6, 7, 8, 9], train_size=500, test_size=2000, split_seed=1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from qimia.data.base import SplitDataModule


def label_subset(dataset: Dataset, labels: Sequence[int], size: int | None, seed: int) -> TensorDataset:
    """The samples of ``dataset`` (a ``TensorDataset`` of inputs and labels) whose label is in
    ``labels``, relabelled to their index in ``labels``; ``size`` of them drawn at random with
    ``seed`` (all of them, shuffled, when ``None``).

    Raises:
        ValueError: fewer than ``size`` samples carry those labels.
    """
    if not isinstance(dataset, TensorDataset):
        raise TypeError(f"label_subset needs a TensorDataset of (inputs, labels), got {type(dataset).__name__}.")
    inputs, targets = dataset.tensors[0], dataset.tensors[1]
    wanted = torch.as_tensor(list(labels), dtype=targets.dtype)
    keep = torch.isin(targets, wanted).nonzero().squeeze(1)
    if size is not None and size > len(keep):
        raise ValueError(f"asked for {size} samples of labels {list(labels)}, the split has only {len(keep)}.")
    order = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))[:size]]
    relabel = torch.full((int(targets.max()) + 1,), -1, dtype=torch.long)
    relabel[wanted.long()] = torch.arange(len(wanted))
    return TensorDataset(inputs[order], relabel[targets[order].long()])


class LabelSubsetDataModule(SplitDataModule):
    """The classes ``labels`` of ``source`` (any in-memory classification data module), relabelled
    ``0 .. len(labels) - 1``, with ``train_size`` / ``val_size`` / ``test_size`` samples of each
    split drawn at random (``None``: all of them).

    Args:
        source: the data module to take the samples from (its own split is kept).
        labels: the classes to keep, in the order of the new labels.
        split_seed: seed of the draw (a different few-label subset per seed).
        **kwargs: ``batch_size``, ``num_workers``, ``seed`` (see :class:`SplitDataModule`).
    """

    def __init__(
        self,
        source: SplitDataModule,
        labels: Sequence[int],
        train_size: int | None = None,
        val_size: int | None = None,
        test_size: int | None = None,
        split_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        labels = [int(label) for label in labels]
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise ValueError(f"labels must be at least two distinct classes, got {labels}.")
        self.source, self.labels, self.split_seed = source, labels, split_seed
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {**self.source.net_kwargs, "num_classes": len(self.labels)}

    def prepare_data(self) -> None:
        self.source.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.source.setup(stage)
        self.train_set, self.val_set, self.test_set = (
            label_subset(getattr(self.source, f"{split}_set"), self.labels, self.sizes[split], self.split_seed + k)
            for k, split in enumerate(("train", "val", "test"))
        )
