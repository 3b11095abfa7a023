"""Data helpers: resumable batch order, permuted task, clear errors for missing files."""

from __future__ import annotations

import pytest
import torch

from qimia.dual.data import batch_indices, load_digits_28, load_images, load_mnist, permute_pixels


def test_batch_indices_are_epoch_permutations_and_recomputable():
    epoch = torch.cat([batch_indices(100, 10, s, seed=3) for s in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))                 # each example once per epoch
    assert torch.equal(batch_indices(100, 10, 7, seed=3), batch_indices(100, 10, 7, seed=3))
    assert not torch.equal(batch_indices(100, 10, 7, seed=3), batch_indices(100, 10, 17, seed=3))


def test_digits_and_permuted_task():
    (x, y), (xt, yt) = load_digits_28()
    assert x.shape[1] == 784 and 0 <= float(x.min()) and float(x.max()) <= 1 and len(xt) > 0
    xp, yp = permute_pixels((x, y))
    assert torch.equal(yp, y) and torch.equal(xp.sort(1).values, x.sort(1).values) and not torch.equal(xp, x)


def test_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data digits"):
        load_mnist(tmp_path / "nope.pkl.gz")
    with pytest.raises(ValueError, match="unknown data set"):
        load_images("cifar")
