"""Denoising data: Gaussian noise of a chosen ``sigma`` on any image data set, and natural
images from a folder.

    DenoisingDataModule(base=DigitsDataModule(normalize=False), sigma=0.2)
    DenoisingDataModule(base=NaturalImagesDataModule(root="photos/", patch_size=48), sigma=25 / 255)

Batches are ``(noisy, clean)`` pairs of ``(B, C, H, W)`` images in [0, 1] (noisy is not clipped,
as in the usual AWGN benchmarks). Training noise is fresh every epoch; validation and test noise
is drawn from a generator seeded by the sample's index, so every evaluation sees the same pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from qimia.data.base import SplitDataModule, split_indices
from qimia.data.vision import channel_count

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class GaussianNoise(Dataset):
    """``(image, label)`` data set -> ``(image + sigma * n, image)``, ``n ~ N(0, I)``.

    Args:
        dataset: images in [0, 1].
        sigma: noise standard deviation (in [0, 1] intensity units).
        fixed: draw the noise of sample ``i`` from a generator seeded by ``seed + i``
            (evaluation); otherwise from the global RNG (training).
    """

    def __init__(self, dataset: Dataset, sigma: float, *, fixed: bool, seed: int = 0) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.dataset, self.sigma, self.fixed, self.seed = dataset, sigma, fixed, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        clean = torch.as_tensor(self.dataset[i][0], dtype=torch.float32)
        generator = torch.Generator().manual_seed(self.seed + i) if self.fixed else None
        noise = torch.randn(clean.shape, generator=generator)
        return clean + self.sigma * noise, clean


class DenoisingDataModule(SplitDataModule):
    """Wrap the splits of any image data module (built with ``normalize=False``) in
    :class:`GaussianNoise`.

    Args:
        base: an image data module whose samples are ``(image in [0, 1], label)``.
        sigma: noise standard deviation.
        **kwargs: ``batch_size``, ``num_workers``, ``seed`` (the base's own batch size is unused).
    """

    task = "denoising"

    def __init__(self, base: SplitDataModule, sigma: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if getattr(base, "normalize", False):
            raise ValueError(
                f"denoising needs images in [0, 1]: build the base data module ({type(base).__name__}) "
                "with normalize=false."
            )
        self.base, self.sigma = base, sigma

    @property
    def net_kwargs(self) -> dict[str, Any]:
        self.setup()
        return {"in_chans": channel_count(self.base.train_set)}

    def prepare_data(self) -> None:
        self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.base.setup(stage)
        self.train_set = GaussianNoise(self.base.train_set, self.sigma, fixed=False)
        self.val_set = GaussianNoise(self.base.val_set, self.sigma, fixed=True, seed=1_000_000)
        self.test_set = GaussianNoise(self.base.test_set, self.sigma, fixed=True, seed=2_000_000)


class ImagePatches(Dataset):
    """Fixed ``patch_size`` crops of a list of images ``(C, H, W)`` in [0, 1].

    ``random=True`` draws a fresh crop position each time (training); otherwise patch ``i`` is
    the ``i``-th cell of a regular grid (evaluation).
    """

    def __init__(self, images: list[Tensor], patch_size: int, *, random: bool, per_image: int = 64) -> None:
        small = [tuple(im.shape) for im in images if min(im.shape[1:]) < patch_size]
        if small:
            raise ValueError(f"images {small[:3]} are smaller than patch_size={patch_size}.")
        self.images, self.patch_size, self.random, self.per_image = images, patch_size, random, per_image
        self.grid = [
            (k, top, left)
            for k, im in enumerate(images)
            for top in range(0, im.shape[1] - patch_size + 1, patch_size)
            for left in range(0, im.shape[2] - patch_size + 1, patch_size)
        ]

    def __len__(self) -> int:
        return len(self.images) * self.per_image if self.random else len(self.grid)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        p = self.patch_size
        if self.random:
            image = self.images[i % len(self.images)]
            top = int(torch.randint(image.shape[1] - p + 1, ()))
            left = int(torch.randint(image.shape[2] - p + 1, ()))
        else:
            k, top, left = self.grid[i]
            image = self.images[k]
        return image[:, top : top + p, left : left + p], 0


def load_images(root: str | Path, grayscale: bool) -> list[Tensor]:
    """Every image file under ``root`` (recursive, sorted) as ``(C, H, W)`` in [0, 1]."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}.")
    mode = "L" if grayscale else "RGB"
    return [pil_to_tensor(Image.open(f).convert(mode)).float().div(255) for f in files]


def sklearn_sample_images(grayscale: bool) -> list[Tensor]:
    """scikit-learn's two embedded photographs (``china.jpg``, ``flower.jpg``, 427x640)."""
    from sklearn.datasets import load_sample_images

    images = [torch.tensor(im).permute(2, 0, 1).float().div(255) for im in load_sample_images().images]
    return [im.mean(0, keepdim=True) for im in images] if grayscale else images


class NaturalImagesDataModule(SplitDataModule):
    """Patches of natural images, for denoising: a folder of photographs, split by image
    (fixed ``split_seed``), or scikit-learn's two sample photographs when ``root`` is ``None``
    (then the images are cut into left/right halves: training on the left three fifths,
    validation and test on the rest).

    Args:
        root: folder of images (any of ``IMAGE_SUFFIXES``, recursive).
        patch_size: side of the square crops.
        grayscale: one channel instead of RGB.
        patches_per_image: random training crops per image and epoch.
        val_fraction, test_fraction: shares of the images held out (folder mode).
    """

    task = None  # raw photographs: wrap in DenoisingDataModule

    normalize = False  # samples are in [0, 1]: ready for DenoisingDataModule

    def __init__(
        self,
        root: str | None = None,
        patch_size: int = 32,
        grayscale: bool = True,
        patches_per_image: int = 256,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.patch_size, self.grayscale = root, patch_size, grayscale
        self.per_image, self.fractions, self.split_seed = patches_per_image, (val_fraction, test_fraction), split_seed

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {"in_chans": 1 if self.grayscale else 3}

    def _splits(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        if self.root is None:
            images = sklearn_sample_images(self.grayscale)
            width = images[0].shape[2]
            a, b = int(width * 0.6), int(width * 0.8)
            return [im[..., :a] for im in images], [im[..., a:b] for im in images], [im[..., b:] for im in images]
        images = load_images(self.root, self.grayscale)
        if len(images) < 3:
            raise ValueError(f"{self.root} has {len(images)} images; a train/val/test split needs at least 3.")
        val, test, train = split_indices(len(images), self.fractions, self.split_seed)
        train = list(train)
        if not len(val):  # too few images for the fraction: one image each, taken out of train
            val = [train.pop()]
        if not len(test):
            test = [train.pop()]
        return [images[i] for i in train], [images[i] for i in val], [images[i] for i in test]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = self._splits()
        self.train_set = ImagePatches(train, self.patch_size, random=True, per_image=self.per_image)
        self.val_set = ImagePatches(val, self.patch_size, random=False)
        self.test_set = ImagePatches(test, self.patch_size, random=False)
