"""Image data sets read through torchvision: CIFAR-10 and any ImageFolder tree (ImageNet).

    CIFAR10DataModule(root="data", download=True)
    ImageFolderDataModule(root="/datasets/imagenet")   # root/train/<class>/*.JPEG, root/val/<class>/*.JPEG
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from qimia.data.base import SplitDataModule, split_indices

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalize(mean: tuple[float, ...], std: tuple[float, ...], enabled: bool) -> list:
    from torchvision import transforms as T

    return [T.Normalize(mean, std)] if enabled else []


class CIFAR10DataModule(SplitDataModule):
    """CIFAR-10 as ``(B, 3, 32, 32)`` images; random crop + flip on the training set.

    Args:
        root: torchvision data folder; ``download=True`` fetches CIFAR-10 there (needs internet).
        val_size: images held out of the 50k training set for validation.
        augment: random crop (padding 4) and horizontal flip for training.
        normalize: standardise with CIFAR-10's channel statistics.
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        val_size: int = 5000,
        split_seed: int = 0,
        augment: bool = True,
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.download, self.val_size = root, download, val_size
        self.split_seed, self.augment, self.normalize = split_seed, augment, normalize

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {"num_classes": 10, "in_chans": 3}

    def _dataset(self, train: bool, augment: bool):
        from torchvision import transforms as T
        from torchvision.datasets import CIFAR10

        ops = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
        transform = T.Compose([*ops, T.ToTensor(), *_normalize(CIFAR10_MEAN, CIFAR10_STD, self.normalize)])
        try:
            return CIFAR10(self.root, train=train, download=self.download, transform=transform)
        except RuntimeError as err:
            raise RuntimeError(
                f"CIFAR-10 not found in {self.root!r} ({err}); pass data.download=true (needs internet) "
                "or data.root=<folder holding cifar-10-batches-py>."
            ) from err

    def prepare_data(self) -> None:
        self._dataset(train=True, augment=False)
        self._dataset(train=False, augment=False)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from torch.utils.data import Subset

        train_full = self._dataset(train=True, augment=self.augment)
        val_full = self._dataset(train=True, augment=False)
        val, rest = split_indices(len(train_full), (self.val_size / len(train_full),), self.split_seed)
        self.train_set, self.val_set = Subset(train_full, rest.tolist()), Subset(val_full, val.tolist())
        self.test_set = self._dataset(train=False, augment=False)


class ImageFolderDataModule(SplitDataModule):
    """Any ``ImageFolder`` tree: ``root/train/<class>/*``, ``root/val/<class>/*`` and optionally
    ``root/test/<class>/*`` (ImageNet's layout; without ``test`` the validation set is also the
    test set, as is usual for ImageNet).

    Args:
        root: the data set folder.
        image_size: training crop (``RandomResizedCrop``) and evaluation centre crop.
        resize: evaluation resize before the centre crop (default ``image_size * 8 / 7``).
        normalize: standardise with ImageNet's channel statistics.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        resize: int | None = None,
        augment: bool = True,
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.image_size = Path(root), image_size
        self.resize = resize or int(round(image_size * 8 / 7))
        self.augment, self.normalize = augment, normalize
        self._num_classes: int | None = None

    @property
    def net_kwargs(self) -> dict[str, Any]:
        if self._num_classes is None:
            self.setup()
        return {"num_classes": self._num_classes, "in_chans": 3}

    def _folder(self, split: str, train: bool):
        from torchvision import transforms as T
        from torchvision.datasets import ImageFolder

        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"no {folder}: an ImageFolder data set needs {self.root}/train/<class>/<image>.")
        norm = _normalize(IMAGENET_MEAN, IMAGENET_STD, self.normalize)
        if train and self.augment:
            ops = [T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip()]
        else:
            ops = [T.Resize(self.resize), T.CenterCrop(self.image_size)]
        return ImageFolder(str(folder), transform=T.Compose([*ops, T.ToTensor(), *norm]))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = self._folder("train", train=True)
        self.val_set = self._folder("val", train=False)
        self.test_set = self._folder("test", train=False) if (self.root / "test").is_dir() else self.val_set
        if self.val_set.classes != self.train_set.classes:
            raise ValueError(
                f"{self.root}/val has classes {self.val_set.classes[:5]}... but train has "
                f"{self.train_set.classes[:5]}...: both need the same class folders."
            )
        self._num_classes = len(self.train_set.classes)


def channel_count(dataset) -> int:
    """Channels of the first image of a ``(image, label)`` data set."""
    image = dataset[0][0]
    return int(torch.as_tensor(image).shape[0])
