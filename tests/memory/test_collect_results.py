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


def fake_history(wrong: list[float], gen: dict | None = None) -> dict:
    ev = [{"step": 10 * (i + 1), "sequences": 160 * (i + 1), "bits": 2 * w + 1.0, "wrong_bits": w}
          for i, w in enumerate(wrong)]
    return {"config": {}, "parameters": 123, "eval": ev, "generalisation": gen,
            "train": [{"step": e["step"], "sequences": e["sequences"], "bits": 0.0, "wrong_bits": 0.0,
                       "seconds": 1.5 * (i + 1)} for i, e in enumerate(ev)]}


def test_collect_writes_eval_curves_and_seed_stats(tmp_path, monkeypatch, capsys):
    mod = load_script()
    runs, dest = tmp_path / "runs", tmp_path / "reports"
    dest.mkdir()
    monkeypatch.setattr(mod, "RUNS", runs)
    monkeypatch.setattr(mod, "DEST", dest)
    for seed, final in enumerate([20.0, 22.0, 21.0]):
        d = runs / f"copy_lstm_s{seed}"
        d.mkdir(parents=True)
        (d / "history.json").write_text(json.dumps(fake_history([30.0, final], {"40": {"bits": 1.0,
                                                                                    "wrong_bits": 100.0 + seed}})))
    (runs / "copy_ntm_s0").mkdir()
    (runs / "copy_ntm_s0" / "history.json").write_text(json.dumps(fake_history([26.4, 2.3, 33.0, 0.0921875, 0.0])))
    (runs / "ut_reverse").mkdir()
    curve = [{"step": 100, "loss": 1.5, "token_acc": 0.4, "seq_acc": 0.0, "ponder_steps": 3.3891234}]
    (runs / "ut_reverse" / "results.json").write_text(json.dumps(
        {"config": {}, "summary": {}, "runs": [{"model": "ut_act", "seed": 1, "curve": curve}]}))
    mod.main()
    capsys.readouterr()
    curves = json.loads((dest / "curves.json").read_text())
    ntm = curves["copy_ntm_s0"]["eval"]
    assert [e["sequences"] for e in ntm] == [160, 320, 480, 640, 800]
    assert [e["wrong_bits"] for e in ntm] == [26.4, 2.3, 33.0, 0.092188, 0.0]  # rounded to 5 significant digits
    assert set(ntm[0]) == {"step", "sequences", "bits", "wrong_bits"}
    assert curves["ut_reverse"]["ut_act_s1"][0]["ponder_steps"] == 3.3891
    stats = json.loads((dest / "summary.json").read_text())["copy_lstm_seeds"]
    assert stats["final_wrong_bits"]["mean"] == pytest.approx(21.0)
    assert stats["final_wrong_bits"]["std"] == pytest.approx(1.0)  # sample std
    assert stats["wrong_bits_len40"]["values"] == [100.0, 101.0, 102.0]


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
        "(0.092)": round(wrong_at("copy_ntm_s0", 48_000), 3),
        "2.27 at 24k": round(wrong_at("copy_ntm_s0", 24_000), 2),
        "17.0 at 32k": round(wrong_at("copy_ntm_s0", 32_000), 1),
        "33.4 at 40k": round(wrong_at("copy_ntm_s0", 40_000), 1),
        "0.131 wrong bits at 16k": round(wrong_at("copy_dnc_s0", 16_000), 3),
        "the NTM's 2.85": round(wrong_at("copy_ntm_s0", 16_000), 2),
        "8.19 wrong bits at 4k": round(wrong_at("recall_dnc_s0", 4_000), 2),
        "6.225 at 24k": round(wrong_at("recall_dnc_s0", 24_000), 3),
        "3.39\nat step 100": round(curves["ut_reverse"]["ut_act_s0"][0]["ponder_steps"], 2),
        "5.58 at step 800": round(curves["ut_reverse"]["ut_act_s0"][7]["ponder_steps"], 2),
        "3.32 to 5.64": round(curves["ut_reverse"]["ut_act_s1"][0]["ponder_steps"], 2),
    }
    for text, value in quoted.items():
        assert text in docs, f"docs/memory.md no longer says {text!r}"
        number = float(text.strip("()").replace("the NTM's ", "").split()[0])
        assert number == value, f"docs say {text!r} but curves.json has {value}"
    assert round(max(c["ponder_steps"] for c in curves["ut_reverse"]["ut_act_s1"]), 2) == 5.64
    assert round(max(c["ponder_steps"] for c in curves["ut_reverse"]["ut_act_s0"]), 2) == 5.58
    assert all(e["wrong_bits"] == 0 for e in curves["copy_ntm_s0"]["eval"] if e["sequences"] >= 56_000)
