from __future__ import annotations

import math

import pytest
import torch

import dataclasses

import yaml

from qimia.app import config_dir
from qimia.data.algorithmic import (
    TASKS, AlgorithmicDataModule, AssociativeRecallTask, BatchIndexSampler, CopyTask, NGramTask, PrioritySortTask,
    RepeatCopyTask, make_task,
)
from qimia.training.sequence import sequence_metrics


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_copy_encoding():
    b = CopyTask(width=4).sample(3, 5, gen())
    assert b.inputs.shape == (3, 11, 5) and b.targets.shape == (3, 11, 4) and b.mask.shape == (3, 11)
    torch.testing.assert_close(b.targets[:, 6:], b.inputs[:, :5, :4])
    assert torch.all(b.inputs[:, 5, 4] == 1) and b.inputs[:, :, 4].sum() == 3  # one delimiter each
    assert torch.all(b.inputs[:, 6:] == 0) and torch.all(b.mask[:, 6:] == 1) and torch.all(b.mask[:, :6] == 0)


def test_generation_is_seeded():
    a, b = CopyTask().sample(2, 4, gen(1)), CopyTask().sample(2, 4, gen(1))
    torch.testing.assert_close(a.inputs, b.inputs)
    assert not torch.equal(a.inputs, CopyTask().sample(2, 4, gen(2)).inputs)


def test_repeat_copy_encoding():
    task = RepeatCopyTask(width=3, min_repeats=3, max_repeats=3)
    b = task.sample(2, 4, gen())
    assert b.inputs.shape[1] == 4 + 1 + 12 + 1
    assert torch.all(b.inputs[:, 4, 4] == 1.0)  # 3 / max_repeats
    for r in range(3):
        torch.testing.assert_close(b.targets[:, 5 + 4 * r : 9 + 4 * r, :3], b.inputs[:, :4, :3])
    assert torch.all(b.targets[:, -1, 3] == 1) and b.targets[:, :-1, 3].sum() == 0


def test_associative_recall_answer_is_item_after_query():
    task = AssociativeRecallTask(width=4, item_len=2)
    b = task.sample(8, 5, gen())
    items = b.inputs[:, : 5 * 3].reshape(8, 5, 3, 6)[:, :, 1:, :4]  # (B, L, k, w)
    query = b.inputs[:, 16:18, :4]
    for i in range(8):
        q = next(j for j in range(4) if torch.equal(items[i, j], query[i]))
        torch.testing.assert_close(b.targets[i, -2:], items[i, q + 1])
    assert b.mask.sum(1).eq(2).all()


def test_priority_sort_targets_sorted_by_priority():
    b = PrioritySortTask(width=4, n_out=3).sample(5, 6, gen())
    prio = b.inputs[:, :6, 4]
    order = prio.argsort(1, descending=True)[:, :3]
    for i in range(5):
        torch.testing.assert_close(b.targets[i, 7:], b.inputs[i, order[i], :4])


def test_metrics_bits_and_wrong_bits():
    targets = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    mask = torch.tensor([[0.0, 1.0]])
    logits = torch.tensor([[[5.0, 5.0], [3.0, -3.0]]])  # masked step ignored; 1 wrong bit in step 2
    m = sequence_metrics(logits, targets, mask)
    expected_bits = (math.log1p(math.exp(-3)) + math.log1p(math.exp(3))) / math.log(2)
    assert m.wrong_bits_per_sequence.item() == 1.0
    assert m.bits_per_sequence.item() == pytest.approx(expected_bits, rel=1e-5)


def test_make_task_rejects_unknown():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("sortt")
    with pytest.raises(ValueError, match=r"no options \['widht'\]"):
        make_task("copy", widht=3)


@pytest.mark.parametrize("name,kw,match", [
    ("copy", dict(min_len=5, max_len=3), "min_len <= max_len"),
    ("copy", dict(min_len=0), "1 <= min_len"),
    ("copy", dict(width=0), "width must be >= 1"),
    ("associative_recall", dict(min_len=1), "2 <= min_len"),
    ("ngrams", dict(order=6, min_len=6, max_len=10), "7 <= min_len"),
    ("repeat_copy", dict(min_repeats=4, max_repeats=2), "min_repeats <= max_repeats"),
])
def test_tasks_reject_bad_options(name, kw, match):
    with pytest.raises(ValueError, match=match):
        make_task(name, **kw)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_config_states_the_tasks_own_defaults(name):
    """The task carries its defaults; its config file lists the same knobs with the same values."""
    packaged = yaml.safe_load((config_dir("memory") / "task" / f"{name}.yaml").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(TASKS[name])}
    assert packaged == {"name": name, **defaults}
    task = make_task(name)
    batch = task.sample(2, task.min_len, gen())
    assert batch.inputs.shape[-1] == task.input_size and batch.targets.shape[-1] == task.output_size
    assert batch.length == task.min_len and batch.mask.shape == batch.inputs.shape[:2]


def test_training_batches_are_a_seeded_stream_split_between_processes():
    dm = AlgorithmicDataModule(CopyTask(max_len=5), batch_size=3, batches_per_epoch=4, eval_batch=2, seed=1)
    first = [b.inputs for b in dm.train_dataloader()]
    again = [b.inputs for b in dm.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and len(first) == 4
    assert not torch.equal(first[0], first[1]) or first[0].shape != first[1].shape
    sampler = BatchIndexSampler(4, start=6)  # a run resumed after 6 batches
    assert list(sampler) == [6, 7, 8, 9] and list(sampler) == [10, 11, 12, 13]  # each epoch continues the stream
    sampler = BatchIndexSampler(2, start=3)
    sampler.num_replicas, sampler.rank = 2, 1  # process 1 of 2 takes every other batch
    assert list(sampler) == [7, 9]
    other_seed = AlgorithmicDataModule(CopyTask(max_len=5), batch_size=3, batches_per_epoch=4, seed=2)
    assert not all(torch.equal(a, b.inputs) for a, b in zip(first, other_seed.train_dataloader()))


def test_evaluation_sets_cover_every_length_and_differ_between_val_and_test():
    dm = AlgorithmicDataModule(CopyTask(min_len=2, max_len=4), eval_batch=3, eval_lengths=[7])
    val, test = list(dm.val_dataloader()), list(dm.test_dataloader())
    assert [b.length for b in val] == [2, 3, 4, 7] == [b.length for b in test]
    assert all(b.inputs.shape[0] == 3 for b in val)
    assert torch.equal(val[0].inputs, next(iter(dm.val_dataloader())).inputs)  # the same sequences every time
    assert not torch.equal(val[0].inputs, test[0].inputs)
    with pytest.raises(ValueError, match="are training lengths"):
        AlgorithmicDataModule(CopyTask(max_len=4), eval_lengths=[3])
    with pytest.raises(ValueError, match="associative_recall sequences need length >= 2"):
        AlgorithmicDataModule(AssociativeRecallTask(), eval_lengths=[1])
    with pytest.raises(ValueError, match="data.batch_size must be >= 1"):
        AlgorithmicDataModule(CopyTask(), batch_size=0)


def test_ngram_encoding_and_bayes_optimal_reference():
    task = NGramTask(order=3)
    b = task.sample(4, 50, gen())
    assert b.inputs.shape == (4, 50, 1) and b.targets.shape == (4, 50, 1)
    torch.testing.assert_close(b.targets[:, :-1], b.inputs[:, 1:])  # target is the next bit
    assert torch.all(b.mask[:, :1] == 0) and torch.all(b.mask[:, 1:] == 1)
    # the Bayes-optimal predictor beats a fair coin (1 bit per scored step) on long sequences
    opt = task.optimal_bits(64, 400, gen(1))
    assert CopyTask().optimal_bits(4, 5, gen()) is None  # unknown for the other tasks
    assert opt < 0.9 * 399
    # and a predictor that knows nothing scores exactly 1 bit per scored step
    m = sequence_metrics(torch.zeros(4, 50, 1), b.targets, b.mask)
    assert m.bits_per_sequence.item() == pytest.approx(49.0)
