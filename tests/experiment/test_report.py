"""``qimia report`` (:mod:`qimia.experiment.report`): the tables and figures of any folder of
finished runs; sample standard deviations (ddof=1) and "n/a" for one seed."""

from __future__ import annotations

import json
import statistics

import matplotlib.axes
import pytest

from qimia.cli import main
from qimia.experiment.report import plot_learning_curves, report_folder
from qimia.experiment.stats import mean_std, plus_minus

ACC = {("residual", 0): 0.90, ("residual", 1): 0.80, ("residual", 2): 0.85, ("qimia", 0): 0.95}


def record(arm: str, seed: int, acc: float) -> dict:
    """A finished run as ``qimia compare`` stores it (runs/<arm>_seed<k>.json)."""
    history = {"val": [{"step": s, "val/acc": acc - 0.1 / s} for s in (1, 2)],
               "train": [{"step": s, "loss": 1.0 / s} for s in (1, 2)]}
    attention = {"stages.0.mixer": [[1.0, 0.0], [0.5, 0.5]]} if arm == "qimia" else {}
    return {"arm": arm, "seed": seed, "test": {"test/acc": acc, "test/loss": 1 - acc}, "monitor": "acc",
            "monitor_mode": "max", "unit": "samples", "params": 1000 if arm == "residual" else 1010,
            "throughput": 100.0 + seed, "target_params": 1000, "knob": "width", "knob_value": 16,
            "reference": "residual", "history": history, "attention": attention}


@pytest.fixture
def runs(tmp_path):
    """A comparison folder: records under runs/ and one in a sub-folder, plus a JSON that is not a run."""
    folder = tmp_path / "compare"
    for (arm, seed), acc in ACC.items():
        sub = folder / "runs" / ("more" if seed == 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{arm}_seed{seed}.json").write_text(json.dumps(record(arm, seed, acc)))
    (folder / "results.json").write_text(json.dumps({"not": "a run"}))
    return folder


def test_mean_std_is_the_sample_std_and_undefined_for_one_value():
    assert mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(statistics.stdev([1.0, 2.0, 4.0])))
    mean, std = mean_std([0.5])
    assert mean == 0.5 and std != std
    assert plus_minus(0.5, std, 4) == "0.5000 ± n/a" and plus_minus(0.5, 0.25) == "0.50 ± 0.25"


def test_report_tabulates_every_run_found_recursively(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", f"dir={runs}", f"hydra.run.dir={out}"]) == 0
    text = (out / "results.md").read_text()
    residual = [ACC[("residual", s)] for s in range(3)]
    expected = f"{100 * statistics.fmean(residual):.2f} ± {100 * statistics.stdev(residual):.2f}"
    row = next(line for line in text.splitlines() if line.startswith("| residual |"))
    assert expected in row and row.endswith("| 3 |")
    qimia = next(line for line in text.splitlines() if line.startswith("| qimia |"))
    assert "95.00 ± n/a" in qimia and "± 0.00" not in qimia and qimia.endswith("| 1 |")
    assert "+5.00 n/a; 1/1" in qimia  # paired with residual on their one common seed
    assert row.index("residual") == 2 and "(reference)" in row
    assert f"Command: `qimia report dir={runs}`" in text
    for name in ("results.csv", "runs.csv", "learning_curves.png", "learning_curves.pdf", "depth_attention.png",
                 "depth_attention.pdf"):
        assert (out / name).stat().st_size > 0
    assert "| residual |" in capsys.readouterr().out


def test_arms_and_reference_choose_the_rows_and_the_baseline(runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", f"dir={runs}", "arms=[qimia,residual]", "reference=qimia", f"hydra.run.dir={out}"]) == 0
    text = (out / "results.md").read_text()
    assert text.index("| qimia |") < text.index("| residual |") and "vs qimia" in text


def test_learning_curve_bands_are_the_sample_std(monkeypatch, tmp_path):
    bands = []
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", lambda self, x, low, high, **kw: bands.append((low, high)))
    records = [record("residual", s, ACC[("residual", s)]) for s in range(3)] + [record("qimia", 0, 0.95)]
    plot_learning_curves(records, ["residual", "qimia"], "acc", tmp_path / "curves.png")
    assert len(bands) == 2  # validation and training of the three-seed arm; none for one seed
    low, high = bands[0]
    last = [100 * (ACC[("residual", s)] - 0.05) for s in range(3)]  # validation accuracy in %, as in the tables
    assert (high[-1] - low[-1]) / 2 == pytest.approx(statistics.stdev(last))


def test_an_extra_sweep_gives_one_row_per_point_compared_with_the_reference_at_that_point(tmp_path):
    folder = tmp_path / "cmp"
    for lr, shift in ((0.001, 0.0), (0.01, -0.2)):
        for arm, acc in (("residual", 0.8), ("qimia", 0.9)):
            for seed in (0, 1):
                run = {**record(arm, seed, acc + shift + 0.01 * seed), "sweep": {"optimizer.lr": lr}}
                (folder / f"{arm},optimizer.lr={lr}_seed{seed}").mkdir(parents=True)
                (folder / f"{arm},optimizer.lr={lr}_seed{seed}" / "result.json").write_text(json.dumps(run))
    summary = report_folder(folder, command="qimia compare")
    assert [a.name for a in summary.arms] == ["residual,optimizer.lr=0.001", "residual,optimizer.lr=0.01",
                                              "qimia,optimizer.lr=0.001", "qimia,optimizer.lr=0.01"]
    for arm in summary.arms[2:]:  # each against the residual of its own learning rate
        assert arm.paired.n == 2 and arm.paired.mean == pytest.approx(0.1) and arm.paired.wins == 2
    assert (folder / "results.md").is_file()


def test_two_comparisons_under_one_folder_are_refused(runs, tmp_path, capsys):
    (runs / "copy").mkdir()
    (runs / "copy" / "qimia_seed0.json").write_text(json.dumps(record("qimia", 0, 0.5)))
    assert main(["report", f"dir={runs}", f"hydra.run.dir={tmp_path / 'r'}"]) == 2
    assert "more than one comparison" in capsys.readouterr().err


def test_missing_or_empty_folders_and_unknown_arms_are_clean_errors(runs, tmp_path, capsys):
    assert main(["report", f"hydra.run.dir={tmp_path / 'r'}"]) == 2
    assert "dir=<folder>" in capsys.readouterr().err
    assert main(["report", f"dir={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'r'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", f"dir={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'r'}"]) == 2
    assert "no finished run records" in capsys.readouterr().err
    assert main(["report", f"dir={runs}", "arms=[dwa]", f"hydra.run.dir={tmp_path / 'r'}"]) == 2
    assert "no finished runs of arms ['dwa']" in capsys.readouterr().err


def test_a_typo_names_the_nearest_key(capsys):
    assert main(["report", "refrence=qimia"]) == 2
    assert "did you mean reference" in capsys.readouterr().err


def test_a_wrong_type_names_the_key(capsys):
    assert main(["report", "seed=abc"]) == 2
    assert "seed='abc': expected int" in capsys.readouterr().err


def test_cfg_job_prints_the_config(capsys):
    assert main(["report", "--cfg", "job"]) == 0
    assert "dir: ???" in capsys.readouterr().out


def test_a_two_seed_sweep_makes_two_run_folders(runs, tmp_path):
    assert main(["report", "-m", "seed=0,1", f"dir={runs}", f"hydra.sweep.dir={tmp_path}"]) == 0
    assert all((tmp_path / job / "results.md").exists() for job in ("0", "1"))
