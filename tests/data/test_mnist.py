import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from qimia.data import MNISTDataModule, load_mnist_idx, load_mnist_pkl
from qimia.data.mnist import read_idx


def _pkl(path, n=(30, 10, 10)):
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((k, 784), dtype=np.float32), rng.integers(0, 10, k)) for k in n)
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f)
    return splits


def _idx(path, array: np.ndarray, gz: bool):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_pkl_loader_and_module(tmp_path):
    splits = _pkl(tmp_path / "mnist.pkl.gz")
    (xtr, ytr), _, _ = load_mnist_pkl(tmp_path / "mnist.pkl.gz")
    assert xtr.shape == (30, 1, 28, 28)
    assert torch.equal(xtr.flatten(1), torch.from_numpy(splits[0][0]))
    assert torch.equal(ytr, torch.from_numpy(splits[0][1]).long())
    dm = MNISTDataModule(path=str(tmp_path / "mnist.pkl.gz"), batch_size=8)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 10)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28)


def test_corrupt_pkl_is_a_clear_error(tmp_path):
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(b"not a gzip file")
    with pytest.raises(ValueError, match="not a readable mnist.pkl.gz"):
        load_mnist_pkl(bad)
    with pytest.raises(FileNotFoundError, match="data.path"):
        load_mnist_pkl(tmp_path / "missing.pkl.gz")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28))
    labels = rng.integers(0, 10, 40)
    suffix = ".gz" if gz else ""
    for split, n in (("train", 40), ("t10k", 12)):
        _idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", images[:n], gz)
        _idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", labels[:n], gz)
    (xtr, ytr), (xte, _) = load_mnist_idx(tmp_path)
    assert xtr.shape == (40, 1, 28, 28) and xte.shape == (12, 1, 28, 28)
    assert torch.allclose(xtr[3, 0], torch.from_numpy(images[3]).float() / 255)
    dm = MNISTDataModule(path=str(tmp_path), val_size=10)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 12)


def test_truncated_idx(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, 2) + struct.pack(">2I", 5, 5) + b"\0" * 7)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
