"""Table 1 procedure and figures on a small real run (brute-force check of the percentages)."""

from __future__ import annotations

import numpy as np
import torch

from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.plots import plot_example
from qimia.dual.table1 import aggregate, table1, to_markdown


def test_table1_matches_manual_computation(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    rec = helpers.train_recorded(model, torch.optim.SGD(model.parameters(), lr=0.05), tmp_path / "s", x, y,
                                 steps=15)
    store = rec.store
    res = table1(model, store, x[:40], y[:40], 3, scores=("contribution", "key"))
    queries, logits = layer_inputs(model, x[:40], store.layer_names)
    pred = logits.argmax(1)
    for score in ("contribution", "key"):
        for name in store.layer_names:
            totals = DualExplainer(store, name, score=score).explain(queries[name], k=1, num_classes=3).class_totals
            top = totals.argmax(1)
            row = res[score][f"layer{store.layer(name).index}"]
            assert np.isclose(row["target_all"], 100 * float((top == y[:40]).float().mean()))
            assert np.isclose(row["output_all"], 100 * float((top == pred).float().mean()))
            right = pred == y[:40]
            assert row["n_right"] == int(right.sum())
            if right.any():
                assert np.isclose(row["target_right"], 100 * float((top == y[:40])[right].float().mean()))
    agg = aggregate([res["key"], res["key"]])
    assert agg["layer0"]["target_all"][1] == 0.0                      # identical seeds: zero spread
    md = to_markdown(agg, 2, "key")
    assert "APPROXIMATE" in md and "| layer2 |" in md


def test_no_duplicate_column_for_right_predictions(tmp_path, blobs, helpers):
    """Where the model is right its output is the target: "= output (model right)" would repeat a column."""
    x, y = blobs
    model = helpers.mlp()
    rec = helpers.train_recorded(model, torch.optim.SGD(model.parameters(), lr=0.05), tmp_path / "s", x, y,
                                 steps=5)
    row = table1(model, rec.store, x[:40], y[:40], 3, scores=("key",))["key"]["layer0"]
    assert "output_right" not in row and "target_right" in row
    md = to_markdown(aggregate([{"layer0": row}]), 1, "key")
    header, sep, line = md.splitlines()[2:5]
    assert "| =output (model right) |" not in header
    assert header.count("|") == sep.count("|") == line.count("|") == 8


def test_plot_example_writes_png(tmp_path):
    topk = {"layer0": torch.rand(3, 50).sort(1, descending=True).values}
    totals = {"layer0": torch.rand(3)}
    path = plot_example(topk, totals, tmp_path / "fig" / "ex.png", title="t")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
