import csv
import importlib
import json

import pytest

from qimia.experiment.compare import StaleResultsError, compare
from qimia.experiment.config import compose_config

compare_module = importlib.import_module("qimia.experiment.compare")


def _cfg(tmp_path, *extra):
    return compose_config([
        "tiny=true", "threads=1", "seeds=2", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.enable_progress_bar=false", "loggers=[]", f"compare.out_dir={tmp_path / 'out'}",
        f"compare.run_dir={tmp_path / 'runs'}", "compare.attention_batch=8", *extra,
    ])


def test_compare_writes_tables_plots_and_resumes(tmp_path, monkeypatch, capsys):
    summary = compare(_cfg(tmp_path))
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
    again = compare(_cfg(tmp_path))
    assert again.arms[1].metric_mean == summary.arms[1].metric_mean
    partial = compare(_cfg(tmp_path, "seeds=5", "compare.report_only=true"))  # tabulate what exists
    assert all(a.seeds == 2 for a in partial.arms)
    # ... and refuses to mix in results of another config
    with pytest.raises(StaleResultsError, match="different config"):
        compare(_cfg(tmp_path, "optimizer.lr=0.5"))


def test_variants_sweep_and_reference(tmp_path):
    cfg = _cfg(tmp_path, "seeds=1", "compare.variants={ref: {mixer: residual}, h2: {mixer: qimia, qimia_heads: 2}}",
               "compare.reference=ref")
    summary = compare(cfg)
    assert [a.name for a in summary.arms] == ["ref", "h2"] and summary.reference == "ref"
    assert summary.arms[1].knob_value % 2 == 0  # heads split the width


def test_bad_arms(tmp_path):
    with pytest.raises(ValueError, match="unknown mixers"):
        compare(_cfg(tmp_path, "compare.mixers=[residual,resnet]"))
    with pytest.raises(ValueError, match="not an arm"):
        compare(_cfg(tmp_path, "compare.reference=dwa"))
