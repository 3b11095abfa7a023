from __future__ import annotations

import gzip
import pickle
import warnings

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seed every test; run the tiny models on one thread (intra-op threads only cost time on
    tensors this small, and spin badly when the cores are shared); the tiny transfer heads sit on
    random bases on purpose, so their warning is silenced (one test checks it is raised)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="transfer head on a frozen base")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory):
    """A tiny ``mnist.pkl.gz`` (200 images per split) with one class-dependent pixel per image,
    so there is something to learn."""
    path = tmp_path_factory.mktemp("data") / "mnist.pkl.gz"
    rng = np.random.default_rng(0)

    def split(n: int = 200):
        y = rng.integers(0, 10, n)
        x = rng.random((n, 784), dtype=np.float32) * 0.1
        x[np.arange(n), y * 70] = 1.0
        return x, y

    with gzip.open(path, "wb") as f:
        pickle.dump((split(), split(), split()), f)
    return path
