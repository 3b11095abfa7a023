"""The image tasks of the dual-form experiments (``qimia.data.image_tasks``): digits at 28x28, the
permuted task, example ids in every batch, the two-task schedules, clear errors."""

from __future__ import annotations

import pytest
import torch

from qimia.data.image_tasks import (
    ImageTaskDataModule, TwoTaskBatches, TwoTaskDataModule, index_batches, load_digits_28, load_second_task, load_task,
    permute_pixels, standardize,
)


def test_digits_28_and_permuted_task():
    (x, y), (xt, yt) = load_digits_28()
    assert x.shape[1:] == (1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert len(x) + len(xt) == 1797 and len(xt) == round(0.25 * 1797)
    xp, yp = permute_pixels((x, y))
    assert xp.shape == x.shape and torch.equal(yp, y) and not torch.equal(xp, x)
    assert torch.equal(xp.flatten(1).sort(1).values, x.flatten(1).sort(1).values)   # the same pixels, moved
    assert torch.equal(permute_pixels((x, y))[0], xp)                                  # one fixed permutation


def test_standardize_uses_the_training_pixels_mean_and_ddof1_std():
    train, test = load_digits_28()
    (xs, ys), (xts, yts), (mean, std) = standardize(train, test)
    pixels = train[0].double().flatten()
    assert mean == pytest.approx(float(pixels.mean())) and std == pytest.approx(float(pixels.std(unbiased=True)))
    assert float(xs.double().mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(xs.double().std(unbiased=True)) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(xts, (test[0] - mean) / std)                            # test set: training statistics
    assert torch.equal(ys, train[1]) and torch.equal(yts, test[1])
    data = ImageTaskDataModule(task="digits", standardize=True, batch_size=8)
    data.setup()
    assert data.mean_std == (mean, std) and torch.equal(data.test_split[0], xts)
    with pytest.raises(ValueError, match="constant"):
        standardize((torch.ones(4, 1, 2, 2), torch.zeros(4)), test)


def test_training_batches_carry_example_and_task_ids():
    data = ImageTaskDataModule(task="digits", batch_size=32, seed=0)
    data.setup()
    images, labels, ids, tasks = next(iter(data.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and torch.equal(tasks, torch.zeros(32, dtype=torch.long))
    train_images, train_labels = data.train_set.tensors[:2]
    assert torch.equal(train_images[ids], images) and torch.equal(train_labels[ids], labels)


def test_index_batches_follow_the_engine_shuffle_and_drop_the_last_batch():
    data = ImageTaskDataModule(task="digits", batch_size=100, seed=3)
    data.setup()
    n = len(data.train_set)
    batches = index_batches(n, 100, seed=3)
    epoch0 = [next(batches) for _ in range(n // 100)]
    loader = [b[2] for b in data.train_dataloader()]                       # example ids of the engine's batches
    assert all(torch.equal(a, b) for a, b in zip(epoch0, loader, strict=True))
    assert not torch.equal(next(batches), epoch0[0])                       # epoch 1: a new shuffle
    with pytest.raises(ValueError, match="does not fit"):
        next(index_batches(5, 6))


@pytest.mark.parametrize("mode", ["continual", "joint"])
def test_two_task_schedule(mode):
    batches = list(TwoTaskBatches((40, 30), batch_size=10, steps_per_task=6, mode=mode, seed=0))
    assert len(batches) == 12 and all(len(b) == 10 for b in batches)
    is_task1 = [[i >= 40 for i in b] for b in batches]
    if mode == "continual":
        assert not any(map(any, is_task1[:6])) and all(map(all, is_task1[6:]))
        first_epoch = sorted(i for b in batches[:4] for i in b)                        # 4 batches of 10 = task 0
        assert first_epoch == list(range(40))
    else:
        assert all(sum(row) == 5 for row in is_task1)
    assert batches == list(TwoTaskBatches((40, 30), batch_size=10, steps_per_task=6, mode=mode, seed=0))


def test_two_task_data_module_offsets_task1_ids():
    data = TwoTaskDataModule(task="digits", second="permuted", mode="joint", steps_per_task=2, batch_size=8)
    data.setup()
    n0 = data.sizes[0]
    _, labels, ids, tasks = next(iter(data.train_dataloader()))
    assert torch.equal(tasks, (ids >= n0).long()) and int(tasks.sum()) == 4
    assert torch.equal(data.train_set.tensors[1][ids], labels)
    assert [len(loader.dataset) for loader in data.val_dataloader()] == [len(s[1]) for s in data.test_splits]


def test_digits_are_a_second_domain_after_mnist(tmp_path):
    from tests.dual.test_cli import write_mnist_pickle

    path = write_mnist_pickle(tmp_path / "mnist.pkl.gz", n=32)
    data = TwoTaskDataModule(task="mnist", path=str(path), second="digits", mode="continual", steps_per_task=3,
                             batch_size=8)
    data.setup()
    (digits_train, _), (digits_test_x, _) = load_digits_28()
    assert data.sizes == (32, len(digits_train))
    torch.testing.assert_close(data.test_splits[1][0], digits_test_x)
    batches = list(data.train_dataloader())
    assert all(int(b[3].sum()) == 0 for b in batches[:3]) and all(bool(b[3].all()) for b in batches[3:])
    with pytest.raises(ValueError, match="is task 0 itself"):
        TwoTaskDataModule(task="digits", second="digits")


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path"):
        load_task("mnist", tmp_path / "nope.pkl.gz")
    with pytest.raises(ValueError, match="unknown image task"):
        load_task("cifar")
    with pytest.raises(ValueError, match="fashion_root"):
        load_second_task("fashion", load_digits_28())
    with pytest.raises(FileNotFoundError, match="FashionMNIST"):
        load_second_task("fashion", load_digits_28(), fashion_root=tmp_path)
    with pytest.raises(ValueError, match="does not fit"):
        TwoTaskBatches((4, 4), batch_size=16, steps_per_task=1, mode="continual")
