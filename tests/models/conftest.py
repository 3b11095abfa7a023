from __future__ import annotations

import warnings

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
