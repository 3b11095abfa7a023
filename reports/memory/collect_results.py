"""Copy the small artefacts of the ``qimia memory`` runs of reproduce.sh into reports/memory/ and
update summary.json / curves.json.

    bash reports/memory/reproduce.sh && python reports/memory/collect_results.py

Each run folder (``outputs/memory/reproduce/<run>/``, set by ``hydra.run.dir`` in reproduce.sh)
holds the ``results.json`` that ``qimia memory`` writes. For each run found:

* ``summary.json[<run>]``: parameters, steps, sequences, the final evaluation at the training
  lengths, the best one, the test metrics at the generalisation lengths and the fit time; plus
  ``copy_lstm_seeds``: mean and sample std over the LSTM copy seeds;
* ``curves.json[<run>]``: the evaluation curve behind every "at N sequences" number in
  ``docs/memory.md`` (step, sequences, bits and wrong bits per sequence).

Entries of runs that are not found are kept as they are, and so are the entries of other commands
(``ut_reverse``, ``ram_mnist``, ``jacobian``: see docs/attention.md).
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

RUNS, DEST = Path("outputs/memory/reproduce"), Path("reports/memory")
FIGURES = {  # run folder -> figures to keep (as reports/memory/<run>_<figure>)
    "copy_ntm_s0": ["curve.png", "weightings.png", "weightings_len40.png", "weightings_len80.png"],
    "copy_lstm_s0": ["curve.png"],
    "copy_lstm_s1": [],
    "copy_lstm_s2": [],
    "copy_dnc_s0": ["curve.png", "weightings.png"],
    "recall_dnc_s0": ["curve.png", "weightings.png"],
    "recall_lstm_s0": ["curve.png"],
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
    names = sorted(k for k, v in summary.items() if k.startswith(prefix) and v.get("final_eval"))
    if not names:
        return None
    runs = [summary[k] for k in names]
    stats: dict = {"runs": names}
    for key in ("wrong_bits", "bits"):
        stats[f"final_{key}"] = _mean_std([r["final_eval"][key] for r in runs])
    for length in runs[0].get("generalisation") or {}:
        stats[f"wrong_bits_len{length}"] = _mean_std([r["generalisation"][length]["wrong_bits"] for r in runs])
    return stats


def summarise(results: dict) -> tuple[dict, dict]:
    """One run's ``results.json`` -> its summary entry and its curve entry."""
    curve = [{k: p[k] for k in ("step", "sequences", "bits", "wrong_bits")} for p in results["curve"]]
    test = results["test"]
    generalisation = {key.removeprefix("len"): value for key, value in test.items() if key.startswith("len")}
    summary = {"parameters": results["parameters"], "steps": results["steps"], "sequences": results["sequences"],
               "final_eval": curve[-1] if curve else None,
               "best_eval_wrong_bits": min((p["wrong_bits"] for p in curve), default=None),
               "test": {"bits": test.get("bits"), "wrong_bits": test.get("wrong_bits")},
               "generalisation": generalisation or None, "train_seconds": results["fit_seconds"]}
    if results.get("optimal_bits") is not None:
        summary["optimal_bits"] = results["optimal_bits"]
    return summary, {"eval": curve}


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    summary, curves = _load(DEST / "summary.json"), _load(DEST / "curves.json")
    found = []
    for run, figures in FIGURES.items():
        src = RUNS / run
        if not (src / "results.json").exists():
            continue
        found.append(run)
        summary[run], curves[run] = summarise(json.loads((src / "results.json").read_text()))
        for figure in figures:
            if (src / figure).exists():
                shutil.copy(src / figure, DEST / f"{run}_{figure}")
    if not found:  # never overwrite the committed results with nothing
        raise SystemExit(f"no runs found under {RUNS}/; run reports/memory/reproduce.sh first (nothing written)")
    stats = lstm_seed_stats(summary)
    if stats:
        summary["copy_lstm_seeds"] = stats
    (DEST / "summary.json").write_text(json.dumps(summary, indent=1))
    (DEST / "curves.json").write_text(json.dumps(_round(curves), indent=1))
    print(f"updated {', '.join(found)} in {DEST}/summary.json and curves.json")


if __name__ == "__main__":
    main()
