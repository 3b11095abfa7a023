"""Streamed explanations agree with brute-force computations on the full attention matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.reconstruct import layer_coefficients
from qimia.dual.store import LABEL, TASK


@pytest.fixture
def trained(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    rec = helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=20, task=lambda s: s % 3,
                                 flush_every=3)
    return model, rec.store, x, y


def _brute(store, layer, q, score):
    """Full (M, N) scores from the raw arrays (no streaming)."""
    keys = np.concatenate([s.keys for s in store.shards(layer)])
    values = np.concatenate([s.values for s in store.shards(layer)])
    dot = q.double() @ torch.from_numpy(keys).double().T
    if score == "key":
        return dot.abs()
    co = layer_coefficients(store, layer)
    w = dot * torch.from_numpy(co.c_w) + torch.from_numpy(co.c_b)
    return w.abs() * torch.from_numpy(values).double().norm(dim=1)


@pytest.mark.parametrize("score", ["contribution", "key"])
def test_streamed_explanation_matches_brute_force(trained, score):
    model, store, x, y = trained
    queries, _ = layer_inputs(model, x[:6], store.layer_names)
    for name in store.layer_names:
        full = _brute(store, name, queries[name], score)                          # (M, N)
        ex = DualExplainer(store, name, score=score, max_block=64)               # tiny blocks: many chunks
        e = ex.explain(queries[name], k=5, num_classes=3, group_by=TASK)
        assert not e.approximate if score == "contribution" else e.approximate
        torch.testing.assert_close(e.topk_scores.double(), full.topk(5).values, rtol=1e-4, atol=1e-7)
        labels, tasks = torch.from_numpy(store.meta(name)[:, LABEL]), torch.from_numpy(store.meta(name)[:, TASK])
        per_class = torch.stack([full[:, labels == c].sum(1) for c in range(3)], 1)
        torch.testing.assert_close(e.class_totals.double(), per_class, rtol=1e-4, atol=1e-6)
        per_task = torch.stack([full[:, tasks == t].sum(1) for t in range(3)], 1)
        torch.testing.assert_close(e.group_totals.double(), per_task, rtol=1e-4, atol=1e-6)
        assert e.group_ids.tolist() == [0, 1, 2]
        torch.testing.assert_close(ex.attention(queries[name]).double(), full, rtol=1e-4, atol=1e-6)


def test_groups_by_several_columns_total_each_class_task_combination(trained):
    model, store, x, _ = trained
    name = store.layer_names[0]
    queries, _ = layer_inputs(model, x[:5], store.layer_names)
    full = _brute(store, name, queries[name], "contribution")                    # (M, N)
    e = DualExplainer(store, name, max_block=64).explain(queries[name], k=1, group_by=(LABEL, TASK))
    meta = store.meta(name)
    pairs = sorted({(int(c), int(t)) for c, t in meta[:, [LABEL, TASK]]})
    assert e.group_ids.shape == (len(pairs), 2) and [tuple(g) for g in e.group_ids.tolist()] == pairs
    expected = torch.stack([full[:, torch.from_numpy((meta[:, LABEL] == c) & (meta[:, TASK] == t))].sum(1)
                            for c, t in pairs], 1)
    torch.testing.assert_close(e.group_totals.double(), expected, rtol=1e-4, atol=1e-6)


def test_masks_zero_out_excluded_slots(trained):
    model, store, x, _ = trained
    queries, _ = layer_inputs(model, x[:4], store.layer_names)
    ex = DualExplainer(store, 0)
    keep = lambda meta: meta[:, TASK] != 2  # noqa: E731
    e = ex.explain(queries[store.layer_names[0]], k=3, group_by=TASK, keep=keep)
    assert torch.all(e.group_totals[:, 2] == 0) and torch.all(e.group_totals[:, :2] > 0)
    kept = np.flatnonzero(store.meta(0)[:, TASK] != 2)
    assert np.isin(e.topk_slots.numpy(), kept).all()


def test_class_topk_is_sorted_per_class(trained):
    model, store, x, _ = trained
    queries, _ = layer_inputs(model, x[:1], store.layer_names)
    name = store.layer_names[1]
    ex = DualExplainer(store, name, max_block=50)
    top = ex.class_topk(queries[name][0], 3, k=20)
    full = _brute(store, name, queries[name][:1], "contribution")[0]
    labels = torch.from_numpy(store.meta(name)[:, LABEL])
    for c in range(3):
        torch.testing.assert_close(top[c].double(), full[labels == c].topk(20).values, rtol=1e-4, atol=1e-7)


def test_bad_queries_and_scores(trained):
    _, store, _, _ = trained
    with pytest.raises(ValueError, match="queries must have shape"):
        DualExplainer(store, 0).explain(torch.randn(2, 3))
    with pytest.raises(ValueError, match="score must be one of"):
        DualExplainer(store, 0, score="bogus")
    with pytest.raises(ValueError, match="exceed max_elements"):
        DualExplainer(store, 0).attention(torch.randn(2, 10), max_elements=10)


def test_example_scores_decompose_the_test_loss_gradient_exactly(trained):
    """sum over training examples of the dual TracIn-like score == -g . (y - a W0 x - a b0)."""
    from qimia.dual.explain import example_scores, layer_inputs_and_errors

    model, store, x, y = trained
    q, g = layer_inputs_and_errors(model, x[:7], y[:7], store.layer_names)
    w0 = store.w0()
    for name in store.layer_names:
        spec, co = store.layer(name), layer_coefficients(store, name)
        scores = example_scores(store, name, q[name], g[name], len(x), max_block=100)   # (7, 200)
        y_out = model.get_submodule(name)(q[name]).detach()
        base = co.a_w * q[name] @ w0[spec.weight].T + co.a_b * w0[spec.bias]
        torch.testing.assert_close(scores.sum(1), -(g[name] * (y_out - base)).sum(1), rtol=1e-4, atol=1e-5)
        never_seen = np.setdiff1d(np.arange(len(x)), store.meta(name)[:, 1])
        assert torch.all(scores[:, never_seen] == 0)
