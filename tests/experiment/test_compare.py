import csv
import importlib
import json

import pytest

from qimia.experiment.compare import StaleResultsError, compare
from qimia.app import compose

compare_module = importlib.import_module("qimia.experiment.compare")


def _cfg(*extra):
    return compose("models/compare", [
        "tiny=true", "threads=1", "seeds=2", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.enable_progress_bar=false", "loggers=[]", "compare.attention_batch=8", *extra,
    ])


def test_compare_writes_tables_plots_and_resumes(tmp_path, monkeypatch, capsys):
    summary = compare(_cfg(), tmp_path / "out")
    out = tmp_path / "out"
    for name in ("results.md", "results.csv", "runs.csv", "learning_curves.png", "depth_attention.png"):
        assert (out / name).stat().st_size > 0, name
    assert [a.name for a in summary.arms] == ["residual", "qimia"]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["arm"] for r in rows] == ["residual", "qimia"] and all(r["seeds"] == "2" for r in rows)
    runs = {(r["arm"], r["seed"]): r for r in csv.DictReader(open(out / "runs.csv"))}
    acc = [float(runs[("qimia", s)]["test/acc"]) for s in ("0", "1")]
    assert float(rows[1]["mean"]) == pytest.approx(sum(acc) / 2, abs=1e-5)
    qimia_run = json.loads((out / "runs" / "qimia_seed0.json").read_text())
    residual_run = json.loads((out / "runs" / "residual_seed0.json").read_text())
    assert residual_run["attention"] == {} and qimia_run["attention"]  # depth attention of QIMIA only
    for matrix in qimia_run["attention"].values():  # rows are softmax weights over the visible slots
        assert all(abs(sum(row) - 1) < 1e-4 for row in matrix)
    # parameter matched: the QIMIA arm's width was searched; both counts reported
    assert abs(summary.arms[1].param_gap) <= 0.05 and "| qimia |" in capsys.readouterr().out

    # a re-run skips every finished (arm, seed) run
    def no_training(*args, **kwargs):
        raise AssertionError("finished runs must not be re-trained")

    monkeypatch.setattr(compare_module, "run_training", no_training)
    again = compare(_cfg(), tmp_path / "out")
    assert again.arms[1].metric_mean == summary.arms[1].metric_mean
    partial = compare(_cfg("seeds=5", "compare.report_only=true"), tmp_path / "out")  # tabulate what exists
    assert all(a.seeds == 2 for a in partial.arms)
    # ... and refuses to mix in results of another config
    with pytest.raises(StaleResultsError, match="different config"):
        compare(_cfg("optimizer.lr=0.5"), tmp_path / "out")


def test_variants_sweep_and_reference(tmp_path):
    cfg = _cfg("seeds=1", "compare.variants={ref: {mixer: residual}, h2: {mixer: qimia, qimia_heads: 2}}",
               "compare.reference=ref")
    summary = compare(cfg, tmp_path / "out")
    assert [a.name for a in summary.arms] == ["ref", "h2"] and summary.reference == "ref"
    assert summary.arms[1].knob_value % 2 == 0  # heads split the width


def test_bad_arms(tmp_path):
    with pytest.raises(ValueError, match="unknown mixers"):
        compare(_cfg("compare.mixers=[residual,resnet]"), tmp_path / "out")
    with pytest.raises(ValueError, match="not an arm"):
        compare(_cfg("compare.reference=dwa"), tmp_path / "out")
