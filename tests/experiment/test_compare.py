"""``qimia compare`` as a sweep: reports, reuse, extension, launchers, concurrency, statistics."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qimia.cli import main
from qimia.experiment import compare as compare_module
from qimia.experiment.stats import paired_difference

FAST = ["tiny=true", "threads=1", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "logger=[]",
        "compare.attention_batch=8", "trainer.deterministic=true", "compare.mixers=[residual,qimia]"]


def _records(folder):
    return {(r["arm"], r["seed"]): r for r in (json.loads(p.read_text()) for p in folder.glob("*/result.json"))}


def test_compare_writes_tables_plots_and_reuses_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "seeds=2", f"hydra.sweep.dir={out}"]) == 0
    printed = capsys.readouterr().out
    for name in ("results.md", "results.csv", "runs.csv", "learning_curves.png", "learning_curves.pdf",
                 "depth_attention.png", "depth_attention.pdf"):
        assert (out / name).stat().st_size > 0, name
    assert printed.count(", done") == 4  # one closing progress line per (arm, seed)
    records = _records(out)
    assert set(records) == {(a, s) for a in ("residual", "qimia") for s in (0, 1)}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["arm"] for r in rows] == ["residual", "qimia"] and all(r["seeds"] == "2" for r in rows)
    acc = [records[("qimia", s)]["test"]["test/acc"] for s in (0, 1)]
    assert float(rows[1]["mean"]) == pytest.approx(sum(acc) / 2, abs=1e-5)
    assert records[("residual", 0)]["attention"] == {} and records[("qimia", 0)]["attention"]
    for matrix in records[("qimia", 0)]["attention"].values():  # rows are softmax weights over the slots
        assert all(abs(sum(row) - 1) < 1e-4 for row in matrix)
    assert records[("qimia", 0)]["params"] != records[("residual", 0)]["params"]  # both counts reported ...
    assert records[("qimia", 0)]["target_params"] == records[("residual", 0)]["params"]  # ... against the reference
    assert "paired difference" in (out / "results.md").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("finished runs must not be re-trained")

    monkeypatch.setattr("qimia.experiment.train.run_training", no_training)
    assert main(["compare", *FAST, "seeds=2", f"hydra.sweep.dir={out}"]) == 0
    assert "reused" in capsys.readouterr().out
    # a different config in the same folder is refused, not mixed in
    assert main(["compare", *FAST, "seeds=2", "optimizer.lr=0.5", f"hydra.sweep.dir={out}"]) != 0
    assert "different config" in capsys.readouterr().err


def test_seeds_extend_a_comparison(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "seeds=[3]", f"hydra.sweep.dir={out}"]) == 0
    assert set(_records(out)) == {("residual", 3), ("qimia", 3)}
    assert main(["compare", *FAST, "seeds=[4]", f"hydra.sweep.dir={out}"]) == 0
    assert {s for _, s in _records(out)} == {3, 4}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert all(r["seeds"] == "2" for r in rows)


@pytest.mark.slow
def test_launchers_give_identical_metrics(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    common = [*FAST, "seeds=2"]
    assert main(["compare", *common, f"hydra.sweep.dir={tmp_path / 'inline'}"]) == 0
    assert main(["compare", *common, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 f"hydra.sweep.dir={tmp_path / 'joblib'}"]) == 0
    inline, parallel = _records(tmp_path / "inline"), _records(tmp_path / "joblib")
    assert set(inline) == set(parallel) and len(inline) == 4
    for key in inline:
        assert inline[key]["test"] == parallel[key]["test"], key


@pytest.mark.slow
def test_concurrent_compares_do_each_run_once(tmp_path):
    out = tmp_path / "cmp"
    command = [sys.executable, "-m", "qimia", "compare", *FAST, "seeds=2", f"hydra.sweep.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    finished = "".join(o for o, _ in outputs).count(", done")
    assert finished == 4  # 2 arms x 2 seeds, each trained by exactly one of the two processes
    assert len(_records(out)) == 4 and (out / "results.md").is_file()


def _children(pid: int) -> set[int]:
    tasks = Path(f"/proc/{pid}/task")
    return {int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()} if tasks.is_dir() else set()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"  # not a zombie
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc (Linux)")
def test_killing_the_driver_stops_its_parallel_jobs(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    command = [sys.executable, "-m", "qimia", "compare", *FAST, "trainer.limit_train_batches=100000",
               "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'cmp'}"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while len(workers) < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
        workers = {c for c in _children(driver.pid) if b"popen_loky_posix" in Path(f"/proc/{c}/cmdline").read_bytes()}
    assert len(workers) == 2, "the joblib workers did not start"
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=60) != 0
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, "workers kept training after their driver was killed"


def test_distributed_runs_inside_a_comparison_are_refused(capsys):
    assert main(["compare", *FAST, "trainer.devices=2"]) == 2
    assert "one job per run" in capsys.readouterr().err


def test_bad_arms(capsys):
    assert main(["compare", *FAST, "compare.mixers=[residual,resnet]"]) == 2
    assert "unknown mixers" in capsys.readouterr().err
    assert main(["compare", *FAST, "compare.reference=dwa"]) == 2
    assert "not an arm" in capsys.readouterr().err


def test_paired_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    arm = {0: 0.91, 1: 0.95, 2: 0.93, 3: 0.97, 4: 0.90}
    ref = {0: 0.90, 1: 0.92, 2: 0.94, 3: 0.93, 4: 0.88, 5: 0.5}  # seed 5 unpaired: left out
    paired = paired_difference(arm, ref, mode="max")
    seeds = sorted(arm)
    test = stats.ttest_rel([arm[s] for s in seeds], [ref[s] for s in seeds])
    interval = test.confidence_interval(0.95)
    assert paired.n == 5 and paired.wins == 4
    assert paired.mean == pytest.approx(sum(arm[s] - ref[s] for s in seeds) / 5)
    assert (paired.low, paired.high) == pytest.approx((interval.low, interval.high))
    one = paired_difference({0: 1.0}, {0: 0.5}, mode="min")
    assert one.n == 1 and math.isnan(one.low) and one.wins == 0 and not one.excludes_zero


def test_seed_list():
    assert compare_module.seed_list(3) == [0, 1, 2] and compare_module.seed_list([3, 4]) == [3, 4]
    with pytest.raises(ValueError, match="seeds"):
        compare_module.seed_list(0)


def test_learning_rates_are_tuned_per_arm_on_validation(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "seeds=1", "compare.tune=lr", "compare.lr_grid=[0.0001,0.01]",
                 f"hydra.sweep.dir={out}"]) == 0
    tuning = (out / "tuning.md").read_text()
    assert "lr=0.0001" in tuning and "lr=0.01" in tuning and "| chosen |" in tuning
    tuned = [json.loads(p.read_text()) for p in (out / "tune").glob("*/result.json")]
    assert len(tuned) == 4 and all(r["phase"] == "tune" for r in tuned)  # 2 arms x 2 rates, seed 0
    for arm in ("residual", "qimia"):
        val = {r["sweep"]["optimizer.lr"]: r["history"]["val"][-1]["val/acc"] for r in tuned if r["arm"] == arm}
        best = max(val, key=val.get)
        run = json.loads((out / f"{arm}_seed0" / "result.json").read_text())
        assert run["phase"] == "compare"
        assert f"lr: {best}" in (out / f"{arm}_seed0" / "config.yaml").read_text()  # trained with its own rate
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["arm"] for r in rows] == ["residual", "qimia"]  # the search runs are not rows of the table


def test_learning_rates_with_a_sweep_are_tuned_at_its_first_point(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "seeds=1", "compare.tune=lr", "compare.lr_grid=[0.0001,0.01]",
                 "trainer.limit_train_batches=2,3", f"hydra.sweep.dir={out}"]) == 0
    assert "at trainer.limit_train_batches=2" in (out / "tuning.md").read_text()
    tuned = [json.loads(p.read_text()) for p in (out / "tune").glob("*/result.json")]
    assert len(tuned) == 4  # 2 arms x 2 rates, at the first point only
    assert all("limit_train_batches: 2\n" in (p.parent / "config.yaml").read_text() for p in (out / "tune").glob("*/result.json"))
    chosen = {}
    for arm in ("residual", "qimia"):
        val = {r["sweep"]["optimizer.lr"]: r["history"]["val"][-1]["val/acc"] for r in tuned if r["arm"] == arm}
        chosen[arm] = max(val, key=val.get)
    runs = sorted(p.parent.name for p in out.glob("*/result.json"))
    assert runs == sorted(f"{a},trainer.limit_train_batches={n}_seed0" for a in chosen for n in (2, 3))
    for name in runs:  # every point trains with its arm's rate
        assert f"lr: {chosen[name.split(',')[0]]}" in (out / name / "config.yaml").read_text()
