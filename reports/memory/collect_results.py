"""Copy the small artefacts of the runs in reproduce.sh into reports/memory/ and write summary/curves JSON.

    python reports/memory/collect_results.py

* ``summary.json``: per run the final numbers (parameters, final eval, generalisation, seconds), plus
  ``copy_lstm_seeds``: mean and sample std over the LSTM copy seeds.
* ``curves.json``: per run the evaluation curve behind every "at N sequences" number in
  ``docs/memory.md`` (``runs/`` is git-ignored, so the curves are kept here): for train runs each
  eval point's step, sequences, bits and wrong bits per sequence; for ``ut_reverse`` each
  model/seed's step, loss, token/sequence accuracy and mean ponder steps; for ``ram_mnist`` the
  per-epoch curve.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

RUNS, DEST = Path("runs/memory"), Path("reports/memory")
COPY = {  # run dir -> files to keep
    "copy_ntm_s0": ["curve.png", "weightings.png", "weightings_len40.png", "weightings_len80.png"],
    "copy_lstm_s0": ["curve.png"],
    "copy_lstm_s1": [],
    "copy_lstm_s2": [],
    "copy_dnc_s0": ["curve.png", "weightings.png"],
    "recall_dnc_s0": ["curve.png", "weightings.png"],
    "recall_lstm_s0": ["curve.png"],
    "ut_reverse": ["curve.png", "results.md"],
    "ram_mnist": ["glimpses.png", "curve.png"],
    "jacobian": ["sequential_jacobian.png", "sensitivity.png"],
}


def _round(value: object, digits: int = 5) -> object:
    """Round floats (recursively) so curves.json stays small and readable."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return value


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def lstm_seed_stats(summary: dict, prefix: str = "copy_lstm_s") -> dict | None:
    """Mean and sample std of the final eval and generalisation over the LSTM copy seeds."""
    runs = [v for k, v in summary.items() if k.startswith(prefix) and v.get("final_eval")]
    if not runs:
        return None
    stats = {"runs": sorted(k for k, v in summary.items() if k.startswith(prefix) and v.get("final_eval"))}
    for key in ("wrong_bits", "bits"):
        stats[f"final_{key}"] = _mean_std([r["final_eval"][key] for r in runs])
    for length in (runs[0].get("generalisation") or {}):
        stats[f"wrong_bits_len{length}"] = _mean_std([r["generalisation"][length]["wrong_bits"] for r in runs])
    return stats


def main() -> None:
    summary: dict = {}
    curves: dict = {}
    for run, files in COPY.items():
        src = RUNS / run
        if not src.exists():
            continue
        for f in files:
            if (src / f).exists():
                shutil.copy(src / f, DEST / f"{run}_{f}")
        if (src / "history.json").exists():
            h = json.loads((src / "history.json").read_text())
            summary[run] = {"parameters": h["parameters"], "steps": h["eval"][-1]["step"] if h["eval"] else 0,
                            "sequences": h["eval"][-1]["sequences"] if h["eval"] else 0,
                            "final_eval": h["eval"][-1] if h["eval"] else None,
                            "best_eval_wrong_bits": min((e["wrong_bits"] for e in h["eval"]), default=None),
                            "generalisation": h.get("generalisation"),
                            "train_seconds": h["train"][-1]["seconds"] if h["train"] else None}
            curves[run] = {"eval": [{k: e[k] for k in ("step", "sequences", "bits", "wrong_bits")}
                                    for e in h["eval"]]}
        if (src / "results.json").exists():
            r = json.loads((src / "results.json").read_text())
            summary[run] = {k: v for k, v in r.items() if k not in ("runs", "curve")}
            if "curve" in r:
                summary[run]["curve"] = r["curve"]
                curves[run] = {"curve": r["curve"]}
            if "runs" in r:  # UT comparison: one curve per model and seed
                curves[run] = {f"{x['model']}_s{x['seed']}": x["curve"] for x in r["runs"]}
        for kind in ("rnn", "classifier"):
            if (src / f"jacobian_{kind}.json").exists():
                summary.setdefault(run, {})[kind] = json.loads((src / f"jacobian_{kind}.json").read_text())
    if not summary:  # never overwrite the committed results with nothing
        raise SystemExit(f"no runs found under {RUNS}/; run reports/memory/reproduce.sh first "
                         f"(nothing written)")
    stats = lstm_seed_stats(summary)
    if stats:
        summary["copy_lstm_seeds"] = stats
    (DEST / "summary.json").write_text(json.dumps(summary, indent=1))
    (DEST / "curves.json").write_text(json.dumps(_round(curves), indent=1))
    print(json.dumps(summary, indent=1)[:4000])


if __name__ == "__main__":
    main()
