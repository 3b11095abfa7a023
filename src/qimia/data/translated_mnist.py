"""Translated images: each digit pasted at a random position of a larger empty canvas (the 60x60
translated MNIST of Mnih, Heess, Graves & Kavukcuoglu, 2014, sec. 4.1).

    base = MNISTDataModule(path="data/mnist.pkl.gz", normalize=False)   # digits in [0, 1] on a zero background
    TranslatedDataModule(base, canvas=60)                               # (B, 1, 60, 60)

Training digits get a new position every time they are drawn: the training batch is translated
on its device, in :meth:`TranslatedDataModule.on_after_batch_transfer`, with a generator seeded
from ``(base.seed, global step, rank)``, so a run is reproducible and a resumed run draws the same
positions as an uninterrupted one. Validation and test digits sit at positions fixed once by
``split_seed`` (:class:`PlacedImages`), the same for every run.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from qimia.data.base import SplitDataModule


def random_offsets(n: int, canvas: int, height: int, width: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Uniform top-left corners ``(n,)`` of a ``height x width`` image inside a ``canvas x canvas`` one.

    Raises:
        ValueError: the canvas is smaller than the image.
    """
    if canvas < max(height, width):
        raise ValueError(f"canvas {canvas} is smaller than the images ({height}x{width}); raise data.canvas.")
    top = torch.randint(0, canvas - height + 1, (n,), generator=generator)
    left = torch.randint(0, canvas - width + 1, (n,), generator=generator)
    return top, left


def place(images: Tensor, canvas: int, top: Tensor, left: Tensor) -> Tensor:
    """Paste each image ``(B, C, h, w)`` with its top-left corner at ``(top[b], left[b])`` of a
    zero ``canvas x canvas`` image; one scatter of pixel indices. Returns ``(B, C, canvas, canvas)``."""
    B, C, h, w = images.shape
    rows = top[:, None, None] + torch.arange(h)[None, :, None]  # (B, h, 1)
    cols = left[:, None, None] + torch.arange(w)[None, None, :]  # (B, 1, w)
    flat = (rows * canvas + cols).reshape(B, 1, h * w).expand(B, C, h * w).to(images.device)
    out = images.new_zeros(B, C, canvas * canvas)
    out.scatter_(2, flat, images.reshape(B, C, h * w))
    return out.view(B, C, canvas, canvas)


def translate(images: Tensor, canvas: int, generator: torch.Generator) -> Tensor:
    """Each image ``(B, C, h, w)`` at a uniformly random position of a ``canvas x canvas`` zero image."""
    top, left = random_offsets(len(images), canvas, *images.shape[-2:], generator)
    return place(images, canvas, top, left)


class PlacedImages(Dataset):
    """``(image, label)`` pairs of ``dataset`` pasted at positions drawn once from ``generator``."""

    def __init__(self, dataset: Dataset, canvas: int, generator: torch.Generator) -> None:
        self.dataset, self.canvas = dataset, canvas
        image = dataset[0][0]
        self.top, self.left = random_offsets(len(dataset), canvas, *image.shape[-2:], generator)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = self.dataset[index]
        placed = place(image[None], self.canvas, self.top[index : index + 1], self.left[index : index + 1])
        return placed[0], label


class TranslatedDataModule(L.LightningDataModule):
    """Any image :class:`~qimia.data.base.SplitDataModule` translated onto a ``canvas x canvas`` image.

    Batch size, workers and the training shuffle are the base module's.

    Args:
        base: the data module of the untranslated images (built with ``normalize=False``, so the
            canvas background equals the digits' background).
        canvas: side of the translated images in pixels.
        split_seed: seed of the fixed validation and test positions.
    """

    def __init__(self, base: SplitDataModule, canvas: int = 60, split_seed: int = 0) -> None:
        super().__init__()
        if canvas < 1:
            raise ValueError(f"canvas must be >= 1, got {canvas}.")
        self.base, self.canvas, self.split_seed = base, canvas, split_seed
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return self.base.net_kwargs

    @property
    def train_set(self) -> Dataset | None:
        """The untranslated training images (translated batch by batch during training)."""
        return self.base.train_set

    def prepare_data(self) -> None:
        self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is not None:
            return
        self.base.setup(stage)
        assert self.base.val_set is not None and self.base.test_set is not None
        self.val_set = PlacedImages(self.base.val_set, self.canvas, torch.Generator().manual_seed(self.split_seed))
        self.test_set = PlacedImages(self.base.test_set, self.canvas, torch.Generator().manual_seed(self.split_seed + 1))

    def train_dataloader(self) -> DataLoader:
        return self.base.train_dataloader()

    def _loader(self, dataset: Dataset | None) -> DataLoader:
        if dataset is None:
            raise RuntimeError("TranslatedDataModule.setup() has not been called.")
        return DataLoader(dataset, batch_size=self.base.batch_size, num_workers=self.base.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Translate a training batch ``(images, labels)`` (evaluation batches are placed already)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch
        images, labels = batch
        seed = (self.base.seed * 1_000_003 + trainer.global_step) * 1_009 + trainer.global_rank
        return translate(images, self.canvas, torch.Generator().manual_seed(seed)), labels
