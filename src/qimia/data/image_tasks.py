"""Image classification tasks with example ids: one task (MNIST or digits at 28x28), or two tasks
with 10 shared outputs (a second task of permuted pixels or Fashion-MNIST), trained jointly or one
after the other.

Every training batch is ``(images (B, 1, 28, 28), labels (B,), example ids (B,), task ids (B,))``
so a recorder can attach each training row to the example and task it came from; evaluation
batches are ``(images, labels)``. Images are in [0, 1], or standardised with ``standardize=True``
(:func:`standardize`: the official code of Irie et al. 2022 normalises MNIST this way).

    single = ImageTaskDataModule(task="mnist", path="data/mnist.pkl.gz", batch_size=128)
    two = TwoTaskDataModule(task="mnist", second="permuted", mode="continual", steps_per_task=1000)

MNIST comes from :func:`qimia.data.mnist.load_mnist_pkl` (its 50k training and 10k test images);
``digits`` is scikit-learn's 8x8 digits upsampled to 28x28 (small, always available).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

from qimia.data.base import EpochSeededSampler, SplitDataModule, split_indices
from qimia.data.digits import digits_images
from qimia.data.mnist import load_mnist_pkl

Split = tuple[Tensor, Tensor]  # images (N, 1, 28, 28) in [0, 1], labels (N,)
TASKS = ("mnist", "digits")
SECOND_TASKS = ("permuted", "digits", "fashion")


def load_digits_28(test_fraction: float = 0.25, split_seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 1,797 8x8 digits upsampled (bilinear) to ``(N, 1, 28, 28)`` in [0, 1]:
    a tiny stand-in for MNIST; ``(train, test)`` split by ``split_seed``."""
    images, labels = digits_images()                                                         # (N, 1, 8, 8)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    test, train = split_indices(len(labels), (test_fraction,), split_seed)
    return (images[train], labels[train]), (images[test], labels[test])


def load_fashion_mnist(root: str | Path) -> tuple[Split, Split]:
    """Fashion-MNIST ``(train 60k, test 10k)`` through torchvision from ``root`` (no download at run
    time: fetch it once with ``torchvision.datasets.FashionMNIST(root, download=True)``)."""
    from torchvision.datasets import FashionMNIST

    try:
        train, test = FashionMNIST(str(root), train=True), FashionMNIST(str(root), train=False)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"Fashion-MNIST not found under {root}: download it once with "
            "torchvision.datasets.FashionMNIST(root, download=True), or use data.second=permuted."
        ) from err
    return tuple((ds.data.float().div(255).unsqueeze(1), ds.targets.long()) for ds in (train, test))  # type: ignore[return-value]


def permute_pixels(split: Split, seed: int = 1234) -> Split:
    """The same images with one fixed random permutation of their pixels (a second task with the
    same labels, as in permuted MNIST)."""
    images, labels = split
    flat = images.flatten(1)                                                                  # (N, H*W)
    order = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed))
    return flat[:, order].view_as(images), labels


def standardize(train: Split, test: Split) -> tuple[Split, Split, tuple[float, float]]:
    """``(x - mean) / std`` for both splits, with the scalar ``mean`` and ``std`` (ddof=1) of every
    pixel of the training images; returns ``(train, test, (mean, std))``.

    This is the normalisation of the official code of Irie, Csordás, Schmidhuber 2022
    (RobertCsordas/linear_layer_as_attention, ``measure_mean_std``: one mean and a ddof=1 std per
    channel over all training pixels; its mean also carries a factor ``n / (n - 1)``, which changes
    it by 1 part in 4e7 for MNIST and is left out here).

    Raises:
        ValueError: the training images are constant (``std == 0``).
    """
    pixels = train[0].double()
    mean, std = float(pixels.mean()), float(pixels.std(unbiased=True))
    if not std > 0:
        raise ValueError("the training images are constant (pixel std 0): they cannot be standardised.")
    scale = lambda split: ((split[0] - mean) / std, split[1])  # noqa: E731
    return scale(train), scale(test), (mean, std)


def load_task(task: str, path: str | Path | None = None) -> tuple[Split, Split]:
    """``(train, test)`` of ``"mnist"`` (``path``: mnist.pkl.gz, its 50k/10k split) or ``"digits"``."""
    if task == "mnist":
        if path is None:
            raise ValueError("task 'mnist' needs data.path=<.../mnist.pkl.gz>.")
        train, _, test = load_mnist_pkl(path)
        return train, test
    if task == "digits":
        return load_digits_28()
    raise ValueError(f"unknown image task {task!r}; choose one of {TASKS}.")


def load_second_task(second: str, first: tuple[Split, Split], fashion_root: str | Path | None = None,
                     permutation_seed: int = 1234) -> tuple[Split, Split]:
    """Task 1 of a two-task run: ``"permuted"`` (task 0's images, pixels permuted by
    ``permutation_seed``), ``"digits"`` (scikit-learn's 8x8 digits at 28x28: another domain of the
    same ten classes, other writers and a 64-pixel source, always available) or ``"fashion"``
    (Fashion-MNIST under ``fashion_root``)."""
    if second == "permuted":
        return permute_pixels(first[0], permutation_seed), permute_pixels(first[1], permutation_seed)
    if second == "digits":
        return load_digits_28()
    if second == "fashion":
        if fashion_root is None:
            raise ValueError("data.second=fashion needs data.fashion_root=<torchvision FashionMNIST folder>.")
        return load_fashion_mnist(fashion_root)
    raise ValueError(f"unknown second task {second!r}; choose one of {SECOND_TASKS}.")


def index_batches(n: int, batch_size: int, seed: int = 0) -> Iterator[Tensor]:
    """Endless ``(batch_size,)`` batches of indices into ``range(n)``: the shuffle of every epoch is
    :class:`~qimia.data.base.EpochSeededSampler`'s (drawn from ``(seed, epoch)`` only, the training
    engine's order), the last incomplete batch of an epoch is dropped.

    Raises:
        ValueError: ``batch_size`` is not in ``[1, n]``.
    """
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size={batch_size} does not fit {n} examples: pass 1 <= batch_size <= {n}.")
    sampler, epoch = EpochSeededSampler(range(n), seed), 0
    while True:
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))                                                   # (n,)
        yield from order[: n // batch_size * batch_size].view(-1, batch_size)
        epoch += 1


def indexed_dataset(train: Split, task: int = 0, first_id: int = 0) -> TensorDataset:
    """``(image, label, example id, task id)`` rows; ids count from ``first_id``."""
    images, labels = train
    n = len(labels)
    return TensorDataset(images, labels, torch.arange(first_id, first_id + n), torch.full((n,), task))


class ImageTaskDataModule(SplitDataModule):
    """One image task with example ids in its training batches (no validation split: the
    dual-form experiments evaluate on the test set after training).

    Args:
        task: ``"mnist"`` or ``"digits"``.
        path: the MNIST pickle (``task="mnist"``).
        standardize: train and test images ``(x - mean) / std`` with the training pixels' mean and
            std (:func:`standardize`; ``self.mean_std`` after :meth:`setup`); else in [0, 1].
        **kwargs: ``batch_size``, ``num_workers``, ``seed`` (the shuffle of every epoch is
            drawn from ``(seed, epoch)``, see :class:`~qimia.data.base.EpochSeededSampler`).
    """

    def __init__(self, task: str = "mnist", path: str | None = None, standardize: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if task not in TASKS:
            raise ValueError(f"unknown image task {task!r}; choose one of {TASKS}.")
        self.task_name, self.path, self.standardize = task, path, standardize
        self.test_split: Split | None = None
        self.mean_std: tuple[float, float] | None = None

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {"num_classes": 10, "in_features": 28 * 28}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, test = load_task(self.task_name, self.path)
        if self.standardize:
            train, test, self.mean_std = standardize(train, test)
        self.train_set, self.test_split = indexed_dataset(train), test
        self.test_set = TensorDataset(*test)


class TwoTaskBatches(Sampler[list[int]]):
    """The batches of a two-task run, ``2 * steps_per_task`` of them, as indices into the
    concatenation of task 0's (``sizes[0]``) and task 1's training examples.

    ``continual``: ``steps_per_task`` batches of task 0, then as many of task 1. ``joint``: every
    batch holds ``batch_size // 2`` examples of task 0 and the rest of task 1. Each task is drawn
    without replacement in shuffles seeded by ``(seed + task, epoch of that task)``.
    """

    def __init__(self, sizes: tuple[int, int], batch_size: int, steps_per_task: int, mode: str, seed: int = 0) -> None:
        if mode not in ("continual", "joint"):
            raise ValueError(f"mode must be 'continual' or 'joint', got {mode!r}.")
        if steps_per_task < 1:
            raise ValueError(f"steps_per_task must be >= 1, got {steps_per_task}.")
        per_batch = (batch_size, batch_size) if mode == "continual" else (batch_size // 2, batch_size - batch_size // 2)
        if min(per_batch) < 1 or any(b > n for b, n in zip(per_batch, sizes)):
            raise ValueError(f"batch_size={batch_size} does not fit {mode} batches of tasks with {sizes} examples.")
        self.sizes, self.per_batch, self.steps, self.mode, self.seed = sizes, per_batch, steps_per_task, mode, seed

    def __iter__(self) -> Iterator[list[int]]:
        first, second = (index_batches(self.sizes[t], self.per_batch[t], self.seed + t) for t in (0, 1))
        offset = self.sizes[0]
        for step in range(2 * self.steps):
            if self.mode == "continual":
                yield (next(first) if step < self.steps else next(second) + offset).tolist()
            else:
                yield torch.cat([next(first), next(second) + offset]).tolist()

    def __len__(self) -> int:
        return 2 * self.steps


class TwoTaskDataModule(SplitDataModule):
    """Two tasks with 10 shared outputs: task 0 (``mnist`` or ``digits``) and task 1 (its
    pixels permuted, scikit-learn's digits, or Fashion-MNIST). One training epoch is the whole schedule of
    :class:`TwoTaskBatches`; example ids of task 1 start after task 0's. ``val_dataloader``
    gives both test sets (task 0, task 1).

    Args:
        task: task 0, ``"mnist"`` (``path``) or ``"digits"``.
        second: task 1, ``"permuted"``, ``"digits"`` (task 0 must be ``mnist``) or ``"fashion"``
            (``fashion_root``).
        mode: ``"continual"`` or ``"joint"``.
        steps_per_task: optimizer steps per task (the run has twice as many).
        permutation_seed: the pixel permutation of ``second="permuted"``.
        **kwargs: ``batch_size``, ``num_workers``, ``seed``.
    """

    def __init__(self, task: str = "mnist", path: str | None = None, second: str = "permuted",
                 fashion_root: str | None = None, mode: str = "continual", steps_per_task: int = 1000,
                 permutation_seed: int = 1234, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if second not in SECOND_TASKS:
            raise ValueError(f"unknown second task {second!r}; choose one of {SECOND_TASKS}.")
        if second == task:
            raise ValueError(f"data.second={second} is task 0 itself: pick another second task "
                             f"({[t for t in SECOND_TASKS if t != task]}) or data.task=mnist.")
        self.task_name, self.path, self.second, self.fashion_root = task, path, second, fashion_root
        self.mode, self.steps_per_task, self.permutation_seed = mode, steps_per_task, permutation_seed
        self.test_splits: list[Split] = []
        self.sizes = (0, 0)

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {"num_classes": 10, "in_features": 28 * 28}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        first = load_task(self.task_name, self.path)
        second = load_second_task(self.second, first, self.fashion_root, self.permutation_seed)
        self.sizes = (len(first[0][1]), len(second[0][1]))
        rows = [indexed_dataset(first[0], task=0), indexed_dataset(second[0], task=1, first_id=self.sizes[0])]
        self.train_set = TensorDataset(*(torch.cat(parts) for parts in zip(*(r.tensors for r in rows))))
        self.test_splits = [first[1], second[1]]

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("TwoTaskDataModule.setup() has not been called.")
        batches = TwoTaskBatches(self.sizes, self.batch_size, self.steps_per_task, self.mode, self.seed)
        return DataLoader(self.train_set, batch_sampler=batches, num_workers=self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(TensorDataset(*split), batch_size=1024) for split in self.test_splits]
