"""scikit-learn's handwritten digits: 1,797 images of 8x8 pixels, embedded in the library.

The default data set of ``qimia train`` and ``qimia compare``: no download, a few seconds per
epoch on a laptop CPU, and still a real (if small) vision task.
"""

from __future__ import annotations

from typing import Any

import torch

from qimia.data.base import SplitDataModule, image_tensor_dataset, split_indices


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 digits: images ``(N, 1, 8, 8)`` in [0, 1] and labels ``(N,)`` (the one reader)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    return images, torch.tensor(digits.target, dtype=torch.int64)


class DigitsDataModule(SplitDataModule):
    """``load_digits()`` as ``(B, 1, 8, 8)`` images in [0, 1] (standardised unless
    ``normalize=False``) with labels 0-9.

    Args:
        val_fraction, test_fraction: shares of the 1,797 images held out (fixed split).
        split_seed: seed of that split, independent of the training seed.
        normalize: standardise with the training set's mean and std.
        **kwargs: ``batch_size``, ``num_workers``, ``seed`` (see :class:`SplitDataModule`).
    """

    def __init__(
        self,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fractions = (val_fraction, test_fraction)
        self.split_seed, self.normalize = split_seed, normalize

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {"num_classes": 10, "in_chans": 1}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = digits_images()
        val, test, train = split_indices(len(labels), self.fractions, self.split_seed)
        mean, std = (images[train].mean().item(), images[train].std().item()) if self.normalize else (0.0, 1.0)
        self.train_set = image_tensor_dataset(images[train], labels[train], mean, std)
        self.val_set = image_tensor_dataset(images[val], labels[val], mean, std)
        self.test_set = image_tensor_dataset(images[test], labels[test], mean, std)
