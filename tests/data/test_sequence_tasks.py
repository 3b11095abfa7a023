from __future__ import annotations

import pytest
import torch

from qimia.data.sequence_tasks import DelayDataModule, SequenceTaskDataModule, delayed_copy, sample_sequences


def test_reverse_and_sort_targets():
    src, tgt, mask = sample_sequences("reverse", 4, 2, 6, 10, torch.Generator().manual_seed(0))
    for b in range(4):
        n = int(mask[b].sum())
        assert torch.equal(tgt[b, :n], src[b, :n].flip(0)) and torch.all(tgt[b, n:] == 0)
    src, tgt, mask = sample_sequences("sort", 4, 2, 6, 10, torch.Generator().manual_seed(0))
    for b in range(4):
        n = int(mask[b].sum())
        assert torch.equal(tgt[b, :n], src[b, :n].sort().values)
    with pytest.raises(ValueError, match="unknown task"):
        sample_sequences("add", 1, 1, 2, 5, torch.Generator())


def test_delayed_copy_target_is_the_input_lag_steps_earlier():
    x, y = delayed_copy(3, 7, 2, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 7, 1)
    torch.testing.assert_close(y[:, 2:], x[:, :-2])
    assert torch.all(y[:, :2] == 0)


def test_batches_are_fixed_by_seed_and_index_and_fresh_across_steps():
    dm = SequenceTaskDataModule(steps=3, batch_size=5, seed=7)
    a, b = list(dm.train_dataloader()), list(SequenceTaskDataModule(steps=3, batch_size=5, seed=7).train_dataloader())
    assert len(a) == 3 and a[0][0].shape == (5, 10)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not torch.equal(a[0][0], a[1][0])
    other = next(iter(SequenceTaskDataModule(steps=3, batch_size=5, seed=8).train_dataloader()))
    assert not torch.equal(a[0][0], other[0])
    # evaluation batches do not depend on the run's seed
    assert torch.equal(next(iter(dm.val_dataloader()))[0],
                       next(iter(SequenceTaskDataModule(seed=8, batch_size=5).val_dataloader()))[0])


def test_longer_test_split_has_only_longer_sequences():
    dm = SequenceTaskDataModule(min_len=2, max_len=4, test_len=7, batch_size=64, eval_batches=1)
    in_range, longer = dm.test_dataloader()
    lengths = next(iter(longer))[2].sum(1)
    assert lengths.min() >= 5 and lengths.max() <= 7
    assert next(iter(in_range))[2].sum(1).max() <= 4
    assert dm.net_kwargs == {"vocab": 10} and dm.test_splits == ("test", "test_longer")


@pytest.mark.parametrize("kw,match", [
    (dict(max_len=10, test_len=10), "test_len must be > max_len"),
    (dict(max_len=10, test_len=7), "test_len must be > max_len"),
    (dict(min_len=8, max_len=5, test_len=9), "min_len <= max_len"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(min_len=0), "min_len must be >= 1"),
    (dict(vocab=1), "vocab must be >= 2"),
    (dict(task="add"), "unknown task"),
])
def test_sequence_task_rejects_bad_lengths_and_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        SequenceTaskDataModule(**kw)


def test_delay_rejects_lag_outside_the_sequence():
    with pytest.raises(ValueError, match="0 <= lag < seq_len"):
        DelayDataModule(seq_len=5, lag=5)
