from __future__ import annotations

import math

import pytest
import torch

from qimia.memory.tasks import (
    AssociativeRecallTask, CopyTask, NGramTask, PrioritySortTask, RepeatCopyTask, make_task, sequence_metrics,
)


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
    with pytest.raises(ValueError, match="bad arguments"):
        make_task("copy", widht=3)


def test_ngram_encoding_and_bayes_optimal_reference():
    task = NGramTask(order=3)
    b = task.sample(4, 50, gen())
    assert b.inputs.shape == (4, 50, 1) and b.targets.shape == (4, 50, 1)
    torch.testing.assert_close(b.targets[:, :-1], b.inputs[:, 1:])  # target is the next bit
    assert torch.all(b.mask[:, :1] == 0) and torch.all(b.mask[:, 1:] == 1)
    # the Bayes-optimal predictor beats a fair coin (1 bit per scored step) on long sequences
    opt = task.optimal_bits(64, 400, gen(1))
    assert opt < 0.9 * 399
    # and a predictor that knows nothing scores exactly 1 bit per scored step
    m = sequence_metrics(torch.zeros(4, 50, 1), b.targets, b.mask)
    assert m.bits_per_sequence.item() == pytest.approx(49.0)
