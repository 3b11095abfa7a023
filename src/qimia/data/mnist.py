"""MNIST from a local ``mnist.pkl.gz`` (the 50k/10k/10k deeplearning.net split), local IDX files,
or torchvision's download.

    MNISTDataModule(path="data/mnist.pkl.gz")              # pickle: ((Xtr, ytr), (Xva, yva), (Xte, yte))
    MNISTDataModule(path="data/MNIST/raw")                  # IDX: train-images-idx3-ubyte[.gz], ...
    MNISTDataModule(root="data", download=True)             # torchvision, 60k train (5k held out) / 10k test
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qimia.data.base import SplitDataModule, image_tensor_dataset, split_indices

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
Split = tuple[Tensor, Tensor]  # images (N, 1, 28, 28) in [0, 1], labels (N,)


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else: a crafted pickle cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: an MNIST pickle holds only numpy arrays (a pickle naming other "
                "objects could run code)"
            )
        return super().find_class(module, name)


def load_mnist_pkl(path: str | Path) -> tuple[Split, Split, Split]:
    """Read ``mnist.pkl.gz`` -> train, valid, test splits of ``(N, 1, 28, 28)`` images in [0, 1].

    Only numpy arrays are unpickled (:class:`_ArraysOnly`), so a crafted file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no MNIST pickle at {path}; set QIMIA_DATA_DIR=<folder holding mnist.pkl.gz> or pass "
            "data.path=<.../mnist.pkl.gz> (data.path=null reads torchvision's MNIST from data.root)."
        )
    try:
        with gzip.open(path, "rb") as f:
            splits = _ArraysOnly(f, encoding="latin1").load()
        out = []
        for images, labels in splits:
            x = torch.as_tensor(np.asarray(images, dtype=np.float32)).view(-1, 1, 28, 28)
            out.append((x, torch.as_tensor(np.asarray(labels)).long()))
        train, val, test = out
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, RuntimeError, TypeError) as err:
        raise ValueError(
            f"{path} is not a readable mnist.pkl.gz (gzip of a pickle ((Xtr, ytr), (Xva, yva), (Xte, yte)) "
            f"with 784-pixel rows): {err}"
        ) from err
    return train, val, test


def read_idx(path: str | Path) -> Tensor:
    """Read one IDX file (optionally gzipped): ``uint8`` array of the shape in its header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number {data[:4]!r}).")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape} ({int(np.prod(shape))} bytes), got {body.size}.")
    return torch.from_numpy(body.reshape(shape).copy())


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no {stem}[.gz] in {folder}: an IDX folder needs {sorted(sum(IDX_FILES.values(), ()))}.")


def load_mnist_idx(folder: str | Path) -> tuple[Split, Split]:
    """Read the four IDX files in ``folder`` -> train and test splits."""
    folder = Path(folder)
    out = []
    for split in ("train", "test"):
        images_file, labels_file = (_find_idx(folder, stem) for stem in IDX_FILES[split])
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise ValueError(f"{split} IDX files disagree: images {tuple(images.shape)}, labels {tuple(labels.shape)}.")
        out.append((images.float().div(255).unsqueeze(1), labels.long()))  # (N, 1, H, W)
    return out[0], out[1]


class MNISTDataModule(SplitDataModule):
    """MNIST as ``(B, 1, 28, 28)`` standardised images and labels 0-9.

    Args:
        path: a ``.pkl.gz`` file (its own train/valid/test split) or a folder of IDX files; if
            ``None``, torchvision's MNIST in ``root`` (downloaded when ``download=True``).
        root: torchvision's data folder.
        download: let torchvision download MNIST (needs internet).
        val_size: images held out of the 60k training set for validation (IDX / torchvision).
        split_seed: seed of that hold-out.
        normalize: standardise with MNIST's mean and std (off for denoising: images in [0, 1]).
        **kwargs: ``batch_size``, ``num_workers``, ``seed``.
    """

    def __init__(
        self,
        path: str | None = None,
        root: str = "data",
        download: bool = False,
        val_size: int = 5000,
        split_seed: int = 0,
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path, self.root, self.download = path, root, download
        self.val_size, self.split_seed, self.normalize = val_size, split_seed, normalize

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {"num_classes": 10, "in_chans": 1}

    def prepare_data(self) -> None:
        if self.path is None:
            self._torchvision(train=True)
            self._torchvision(train=False)

    def _torchvision(self, train: bool) -> Split:
        from torchvision.datasets import MNIST

        try:
            ds = MNIST(self.root, train=train, download=self.download)
        except RuntimeError as err:
            raise RuntimeError(
                f"torchvision MNIST not found in {self.root!r} ({err}). Pass data.download=true (needs "
                "internet) or data.path=<mnist.pkl.gz or IDX folder>."
            ) from err
        return ds.data.float().div(255).unsqueeze(1), ds.targets.long()

    def _hold_out(self, train: Split) -> tuple[Split, Split]:
        images, labels = train
        fraction = self.val_size / len(labels)
        val, rest = split_indices(len(labels), (fraction,), self.split_seed)
        return (images[rest], labels[rest]), (images[val], labels[val])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.path is None:
            train, val = self._hold_out(self._torchvision(train=True))
            test = self._torchvision(train=False)
        elif Path(self.path).is_dir():
            full_train, test = load_mnist_idx(self.path)
            train, val = self._hold_out(full_train)
        else:
            train, val, test = load_mnist_pkl(self.path)
        mean, std = (MNIST_MEAN, MNIST_STD) if self.normalize else (0.0, 1.0)
        self.train_set, self.val_set, self.test_set = (
            image_tensor_dataset(x, y, mean, std) for x, y in (train, val, test)
        )
