"""Data for the dual-form experiments: MNIST (local pickle), permuted MNIST, sklearn digits,
Fashion-MNIST (torchvision, for users who have it) and text corpora for the language model.

All image sets are returned as ``(X, y)`` with ``X`` ``(n, 784)`` float32 in [0, 1] and ``y`` ``(n,)`` int64.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

# <repo>/../shared/data/mnist.pkl.gz for a source checkout; override with $QIMIA_MNIST
DEFAULT_MNIST = Path(os.environ.get(
    "QIMIA_MNIST", Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mnist.pkl.gz"))
ImageSplit = tuple[torch.Tensor, torch.Tensor]


def load_mnist(path: str | Path | None = None) -> tuple[ImageSplit, ImageSplit]:
    """``(train 50k, test 10k)`` from the classic ``mnist.pkl.gz`` (train / valid / test pickle)."""
    p = Path(path) if path else DEFAULT_MNIST
    if not p.exists():
        raise FileNotFoundError(f"MNIST pickle not found at {p}; pass --mnist PATH (mnist.pkl.gz) or use "
                                "--data digits for the small sklearn digits set.")
    with gzip.open(p) as f:
        (xtr, ytr), _, (xte, yte) = pickle.load(f, encoding="latin1")
    t = lambda a, dt: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return (t(xtr, torch.float32), t(ytr, torch.int64)), (t(xte, torch.float32), t(yte, torch.int64))


def load_digits_28(test_fraction: float = 0.25, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """sklearn's 8x8 digits upsampled to 28x28 (bilinear), scaled to [0, 1]: a tiny MNIST stand-in."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0              # (n, 1, 8, 8)
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)       # (n, 1, 28, 28)
    x = x.reshape(len(x), 784).clamp(0, 1)                                          # (n, 784)
    y = torch.as_tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    return (x[tr], y[tr]), (x[te], y[te])


def load_fashion_mnist(root: str | Path) -> tuple[ImageSplit, ImageSplit]:
    """Fashion-MNIST through torchvision from ``root`` (no download at run time: fetch it beforehand)."""
    from torchvision.datasets import FashionMNIST

    try:
        tr, te = FashionMNIST(str(root), train=True), FashionMNIST(str(root), train=False)
    except RuntimeError as exc:
        raise FileNotFoundError(f"Fashion-MNIST not found under {root}: download it once with "
                                "torchvision.datasets.FashionMNIST(root, download=True), or use "
                                "--task2 permuted.") from exc
    conv = lambda ds: (ds.data.reshape(len(ds), 784).float() / 255.0, ds.targets.long())  # noqa: E731
    return conv(tr), conv(te)


def permute_pixels(split: ImageSplit, seed: int = 1234) -> ImageSplit:
    """The same images with one fixed random pixel permutation (a second task with the same labels)."""
    x, y = split
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(seed))
    return x[:, perm], y


def load_images(name: str, mnist_path: str | None = None, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """``"mnist"`` (real, local pickle) or ``"digits"`` (sklearn, always available)."""
    if name == "mnist":
        return load_mnist(mnist_path)
    if name == "digits":
        return load_digits_28(seed=seed)
    raise ValueError(f"unknown data set {name!r}; use 'mnist' or 'digits'.")


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """``(B,)`` indices of ``step``'s batch: epoch-wise shuffles seeded by (seed, epoch), so any step
    can be recomputed without replaying earlier ones (exact resume after a kill)."""
    per_epoch = n // batch_size
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[i * batch_size:(i + 1) * batch_size]
