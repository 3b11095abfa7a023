"""``reports/memory/collect_results.py``: the curves behind docs/memory.md are kept in the repo."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "reports" / "memory" / "collect_results.py"


def load_script():
    spec = importlib.util.spec_from_file_location("collect_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def collect(tmp_path, monkeypatch):
    """The script, reading runs from ``tmp_path/runs`` and writing into an empty ``tmp_path/reports``."""
    mod = load_script()
    runs, dest = tmp_path / "runs", tmp_path / "reports"
    dest.mkdir()
    monkeypatch.setattr(mod, "RUNS", runs)
    monkeypatch.setattr(mod, "DEST", dest)
    return mod, runs, dest


def fake_results(wrong: list[float], generalisation: dict | None = None) -> dict:
    """A ``results.json`` as ``qimia memory`` writes it (eval every 10 steps of batch 16)."""
    curve = [{"step": 10 * (i + 1), "sequences": 160 * (i + 1), "epoch": i, "bits": 2 * w + 1.0, "wrong_bits": w,
              **{f"len{k}": v for k, v in (generalisation or {}).items()}} for i, w in enumerate(wrong)]
    test = {"bits": 2 * wrong[-1] + 1.5, "wrong_bits": wrong[-1] + 0.5,
            **{f"len{k}": v for k, v in (generalisation or {}).items()}}
    return {"task": "copy", "model": "lstm", "parameters": 123, "steps": curve[-1]["step"],
            "sequences": curve[-1]["sequences"], "fit_seconds": 1.5, "test": test, "optimal_bits": None,
            "curve": curve, "train": []}


def test_collect_writes_eval_curves_and_seed_stats_and_keeps_other_entries(collect, capsys):
    mod, runs, dest = collect
    (dest / "summary.json").write_text(json.dumps({"ut_reverse": {"kept": 1}, "copy_dnc_s0": {"old": 1}}))
    (dest / "curves.json").write_text(json.dumps({"ram_mnist": {"curve": [1]}}))
    for seed, final in enumerate([20.0, 22.0, 21.0]):
        d = runs / f"copy_lstm_s{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(fake_results([30.0, final], {40: {"bits": 1.0,
                                                                                    "wrong_bits": 100.0 + seed}})))
    (runs / "copy_ntm_adam_s0").mkdir()
    (runs / "copy_ntm_adam_s0" / "results.json").write_text(json.dumps(fake_results([26.4, 2.3, 33.0, 0.0921875, 0.0])))
    (runs / "copy_ntm_adam_s0" / "curve.png").write_bytes(b"png")
    mod.main()
    assert "copy_ntm_adam_s0" in capsys.readouterr().out
    curves = json.loads((dest / "curves.json").read_text())
    ntm = curves["copy_ntm_adam_s0"]["eval"]
    assert [e["sequences"] for e in ntm] == [160, 320, 480, 640, 800]
    assert [e["wrong_bits"] for e in ntm] == [26.4, 2.3, 33.0, 0.092188, 0.0]  # rounded to 5 significant digits
    assert set(ntm[0]) == {"step", "sequences", "bits", "wrong_bits"}
    assert curves["ram_mnist"] == {"curve": [1]}  # another command's curve is kept
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["ut_reverse"] == {"kept": 1} and summary["copy_dnc_s0"] == {"old": 1}  # runs not found: kept
    assert summary["copy_ntm_adam_s0"]["final_eval"]["wrong_bits"] == 0.0
    assert summary["copy_ntm_adam_s0"]["best_eval_wrong_bits"] == 0.0 and summary["copy_ntm_adam_s0"]["test"]["wrong_bits"] == 0.5
    assert summary["copy_lstm_s1"]["generalisation"] == {"40": {"bits": 1.0, "wrong_bits": 101.0}}
    stats = summary["copy_lstm_seeds"]
    assert stats["final_wrong_bits"]["mean"] == pytest.approx(21.0)
    assert stats["final_wrong_bits"]["std"] == pytest.approx(1.0)  # sample std
    assert stats["wrong_bits_len40"]["values"] == [100.0, 101.0, 102.0]
    assert (dest / "copy_ntm_adam_s0_curve.png").read_bytes() == b"png"


def test_ntm_seeds_are_summarised_with_the_copy_bar_and_plotted(collect):
    mod, runs, dest = collect
    finals = {0: (0.0, 0.0), 1: (0.05, 0.0), 2: (0.0, 0.25), 3: (0.5, 0.0)}  # seed -> (lengths 1-20, length 80)
    for seed, (final, len80) in finals.items():
        (runs / f"copy_ntm_s{seed}").mkdir(parents=True)
        results = fake_results([30.0, final], {40: {"bits": 1.0, "wrong_bits": 0.0},
                                               80: {"bits": 2.0, "wrong_bits": len80}})
        (runs / f"copy_ntm_s{seed}" / "results.json").write_text(json.dumps(results))
    mod.main()
    summary = json.loads((dest / "summary.json").read_text())
    stats = summary["copy_ntm_seeds"]
    assert stats["runs"] == [f"copy_ntm_s{seed}" for seed in range(4)]
    assert stats["converged"] == ["copy_ntm_s0", "copy_ntm_s1"]  # s2 misses at length 80, s3 at lengths 1-20
    assert stats["wrong_bits_len80"]["values"] == [0.0, 0.0, 0.25, 0.0]
    assert stats["relapses"] == {f"copy_ntm_s{seed}": [] for seed in range(4)}
    assert "copy_lstm_seeds" not in summary and "repeat_copy_dnc_seeds" not in summary
    curve = json.loads((dest / "curves.json").read_text())["copy_ntm_s2"]["eval"]
    assert curve[-1] == {"step": 20, "sequences": 320, "bits": 1.0, "wrong_bits": 0.0, "len40": 0.0, "len80": 0.25}
    assert (dest / "copy_ntm_seeds.png").stat().st_size > 1000


def test_decay_runs_keep_their_rate_changes_from_the_csv_log_and_their_own_seed_family(collect):
    mod, runs, dest = collect
    rows = ["epoch,lr-RMSprop/pg1,lr-RMSprop/pg2,step,train/bits,val/wrong_bits",
            ",0.0001,0.0001,9,,", "0,,,9,3.0,", "0,,,9,,2.5",  # Lightning's CSV: one row per logging call
            ",0.0001,0.0001,19,,", "1,,,19,,0.0", ",1e-05,1e-05,29,,", ",1e-05,1e-05,39,,", ",1e-06,1e-06,49,,"]
    for run in ("copy_ntm_decay_s0", "copy_ntm_s0"):
        (runs / run / "csv").mkdir(parents=True)
        (runs / run / "results.json").write_text(json.dumps(fake_results([30.0, 0.0], {40: {"bits": 1.0, "wrong_bits": 0.0},
                                                                                       80: {"bits": 2.0, "wrong_bits": 0.0}})))
    (runs / "copy_ntm_decay_s0" / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    (runs / "copy_ntm_s0" / "csv" / "metrics.csv").write_text("\n".join(rows[:3]) + "\n")  # a constant rate
    mod.main()
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["copy_ntm_decay_s0"]["rate_changes"] == [{"step": 9, "lr": 1e-4}, {"step": 29, "lr": 1e-5},
                                                            {"step": 49, "lr": 1e-6}]
    assert "rate_changes" not in summary["copy_ntm_s0"]  # the rate never changed
    assert summary["copy_ntm_decay_seeds"]["runs"] == ["copy_ntm_decay_s0"]  # not mixed with copy_ntm_s<seed>
    assert summary["copy_ntm_seeds"]["runs"] == ["copy_ntm_s0"]
    assert summary["copy_ntm_decay_seeds"]["converged"] == ["copy_ntm_decay_s0"]
    assert (dest / "copy_ntm_decay_seeds.png").stat().st_size > 1000
    assert mod.rate_changes(runs / "missing.csv") is None


def test_every_ntm_recipe_has_its_own_seed_family_figure_and_kept_figures(collect):
    mod, runs, dest = collect
    assert mod.NTM_COPY_FAMILIES == ("copy_ntm", "copy_ntm_decay", "copy_ntm_graves", "copy_ntm_clamp1",
                                     "copy_ntm_clamp1_long", "copy_ntm_solved")
    finals = ([30.0, 0.0], [30.0, 5.0], [30.0, 0.05], [30.0, 0.2], [9.0, 0.0], [30.0, 0.106])
    for family, wrong in zip(mod.NTM_COPY_FAMILIES, finals, strict=True):
        for seed in (0, 1):
            run = runs / f"{family}_s{seed}"
            run.mkdir(parents=True)
            (run / "results.json").write_text(json.dumps(fake_results(wrong, {40: {"bits": 1.0, "wrong_bits": 0.0},
                                                                              80: {"bits": 2.0, "wrong_bits": 0.0}})))
            (run / "curve.png").write_bytes(b"png")
    mod.main()
    summary = json.loads((dest / "summary.json").read_text())
    for family, converged in zip(mod.NTM_COPY_FAMILIES, (True, False, True, False, True, False), strict=True):
        assert summary[f"{family}_seeds"]["runs"] == [f"{family}_s0", f"{family}_s1"]
        assert summary[f"{family}_seeds"]["converged"] == ([f"{family}_s0", f"{family}_s1"] if converged else [])
        assert (dest / f"{family}_seeds.png").stat().st_size > 1000
        assert (dest / f"{family}_s1_curve.png").read_bytes() == b"png"


def test_relapses_are_the_failed_evaluations_after_the_first_solved_one():
    mod = load_script()
    curve = [{"step": 10 * (i + 1), "wrong_bits": w} for i, w in enumerate([30.0, 8.0, 0.05, 0.5, 34.0, 0.0, 2.0])]
    assert mod.relapses(curve) == [50, 70]  # 8.0 at step 20 comes before the task was solved
    assert mod.relapses(curve[:2]) == []  # never solved: nothing to relapse from


def test_copy_bar_needs_both_generalisation_lengths():
    mod = load_script()
    entry = {"final_eval": {"wrong_bits": 0.0}, "generalisation": {"40": {"wrong_bits": 0.0}}}
    assert not mod.copy_converged(entry)  # length 80 was not tested
    entry["generalisation"]["80"] = {"wrong_bits": 0.0}
    assert mod.copy_converged(entry)


def test_collect_without_runs_keeps_existing_results(tmp_path, monkeypatch):
    mod = load_script()
    dest = tmp_path / "reports"
    dest.mkdir()
    (dest / "summary.json").write_text('{"kept": true}')
    monkeypatch.setattr(mod, "RUNS", tmp_path / "nothing")
    monkeypatch.setattr(mod, "DEST", dest)
    with pytest.raises(SystemExit, match="no runs found"):
        mod.main()
    assert json.loads((dest / "summary.json").read_text()) == {"kept": True}


def test_curve_numbers_quoted_in_docs_are_in_curves_json():
    curves = json.loads((ROOT / "reports" / "memory" / "curves.json").read_text())
    docs = (ROOT / "docs" / "memory.md").read_text()

    def wrong_at(run: str, sequences: int) -> float:
        (point,) = [e for e in curves[run]["eval"] if e["sequences"] == sequences]
        return point["wrong_bits"]

    quoted = {  # docs/memory.md text -> the value in curves.json it stands for
        "(0.092)": round(wrong_at("copy_ntm_adam_s0", 48_000), 3),
        "2.27 at 24k": round(wrong_at("copy_ntm_adam_s0", 24_000), 2),
        "17.0 at 32k": round(wrong_at("copy_ntm_adam_s0", 32_000), 1),
        "33.4 at 40k": round(wrong_at("copy_ntm_adam_s0", 40_000), 1),
        "0.028 wrong bits at 16k": round(wrong_at("copy_dnc_s0", 16_000), 3),
        "the NTM's 2.85": round(wrong_at("copy_ntm_adam_s0", 16_000), 2),
        "8.19 wrong bits at 4k": round(wrong_at("recall_dnc_s0", 4_000), 2),
        "6.225 at 24k": round(wrong_at("recall_dnc_s0", 24_000), 3),
    }
    for text, value in quoted.items():
        assert text in docs, f"docs/memory.md no longer says {text!r}"
        number = float(text.strip("()").replace("the NTM's ", "").split()[0])
        assert number == value, f"docs say {text!r} but curves.json has {value}"
    assert all(e["wrong_bits"] == 0 for e in curves["copy_ntm_adam_s0"]["eval"] if e["sequences"] >= 56_000)


def test_ntm_seed_claims_in_docs_match_summary_json():
    summary = json.loads((ROOT / "reports" / "memory" / "summary.json").read_text())
    docs = (ROOT / "docs" / "memory.md").read_text()
    stats = summary["copy_ntm_seeds"]
    words = {3: "three", 4: "four", 5: "five"}
    met, seeds = words[len(stats["converged"])].capitalize(), words[len(stats["runs"])]
    assert f"**{met} of {seeds} seeds meet the bar" in docs
    assert "copy_ntm_s3" not in stats["converged"] and summary["copy_ntm_s3"]["generalisation"]["80"]["wrong_bits"] > 10
    relapses = stats["relapses"]["copy_ntm_s2"]
    assert f"{len(relapses)} validations with more than 1" in docs and f"the last at {relapses[-1]:,} sequences" in docs


def test_ram_seeds_give_the_mean_test_error_with_best_validation_weights(collect):
    mod, runs, dest = collect
    for seed, test_error in enumerate([0.012, 0.014]):
        run = runs / f"ram_mnist_reference_s{seed}"
        run.mkdir(parents=True)
        curve = [{"epoch": e, "val/error": v} for e, v in enumerate([0.2, 0.011, 0.013], start=1)]
        results = {"test": {"test/error": test_error, "test/nll": 0.05}, "test_checkpoint": "best",
                   "best_val_error": 0.011, "parameters": 242317, "train_seconds": 60.0, "curve": curve}
        (run / "results.json").write_text(json.dumps(results))
        (run / "glimpses.png").write_bytes(b"png")
    mod.main()
    summary = json.loads((dest / "summary.json").read_text())
    ram = summary["ram_mnist"]
    assert ram["test_error"] == pytest.approx(0.013) and ram["test_error_std"] == pytest.approx(0.0014142, rel=1e-4)
    assert ram["seeds"] == 2 and ram["command"].startswith("qimia memory ram ram_experiment=mnist_reference")
    assert ram["runs"]["ram_mnist_reference_s1"] == {"test_error": 0.014, "best_val_error": 0.011, "epochs": 3,
                                                    "best_epoch": 2, "parameters": 242317, "train_seconds": 60.0}
    assert json.loads((dest / "curves.json").read_text())["ram_mnist_reference_s0"]["epochs"][1] == {
        "epoch": 2, "val/error": 0.011}
    assert "ram_translated_mnist" not in summary and (dest / "ram_mnist_reference_s0_glimpses.png").read_bytes() == b"png"
