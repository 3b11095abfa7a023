"""Copy the small artefacts of the ``qimia memory`` runs of reproduce.sh into reports/memory/ and
update summary.json / curves.json.

    bash reports/memory/reproduce.sh && python reports/memory/collect_results.py

Each run folder (``outputs/memory/reproduce/<run>/``, set by ``hydra.run.dir`` in reproduce.sh)
holds the ``results.json`` that ``qimia memory`` writes. For each run found:

* ``summary.json[<run>]``: parameters, steps, sequences, the final evaluation at the training
  lengths, the best one, the test metrics at the generalisation lengths and the fit time; plus
  ``<family>_seeds`` (``copy_lstm``, the :data:`NTM_COPY_FAMILIES`, ``repeat_copy_dnc``,
  ``recall_dnc_10k``): mean and sample std over the family's seeds, for ``copy_*`` the seeds that meet the copy bar (:func:`copy_converged`), and each
  seed's relapses (:func:`relapses`);
* ``curves.json[<run>]``: the evaluation curve behind every "at N sequences" number in
  ``docs/memory.md`` (step, sequences, bits and wrong bits per sequence, and the wrong bits at each
  generalisation length as ``len<N>``);
* ``summary.json[<run>]["rate_changes"]``: the step of every change of the learning rate (from the
  run's CSV log), for runs whose rate changed (``experiment=ntm_paper_decay``, ``ntm_paper_solved``);
* ``<family>_seeds.png`` for each of the :data:`NTM_COPY_FAMILIES`: the NTM copy seeds' evaluation
  curves, one panel per length, one figure per recipe;
* ``summary.json[ram_mnist]``, ``[ram_translated_mnist]`` (``qimia memory ram``, runs
  ``ram_mnist_reference_s<seed>``, ``ram_translated_mnist_s<seed>``): each seed's test error with the
  best-validation weights, its epochs and best epoch, and the mean and sample std over the seeds
  (:func:`ram_summary`); ``curves.json[<run>]`` their per-epoch training NLL, validation error and rate.

Entries of runs that are not found are kept as they are, and so are the entries of other commands
(``ut_reverse``, ``jacobian``: see docs/attention.md).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
from collections.abc import Iterable
from pathlib import Path

RUNS, DEST = Path("outputs/memory/reproduce"), Path("reports/memory")
NTM_COPY_FAMILIES = (  # the NTM on copy: run family <family>_s<seed>, one per recipe
    "copy_ntm",  # the paper's recipe with torch's RMSprop (experiment=ntm_paper)
    "copy_ntm_decay",  # the same, the rate divided by 10 on a 10-evaluation plateau (experiment=ntm_paper_decay)
    "copy_ntm_graves",  # the paper's recipe with Graves' (2013) RMSprop (experiment=ntm_paper_graves)
    "copy_ntm_clamp1",  # the paper's recipe with the gradient clamped to [-1, 1] (trainer.gradient_clip_val=1)
    "copy_ntm_clamp1_long",  # the same runs continued to 40,000 sequences (ckpt_path=last)
    "copy_ntm_solved",  # the paper's recipe, the rate divided by 10 once at the copy bar (experiment=ntm_paper_solved)
)
FIGURES = {  # run folder -> figures to keep (as reports/memory/<run>_<figure>)
    # NTM copy, five seeds of each recipe of NTM_COPY_FAMILIES
    **{f"{family}_s{seed}": ["curve.png", "weightings_len80.png"] if seed == 0 else ["curve.png"]
       for family in NTM_COPY_FAMILIES for seed in range(5)},
    "copy_ntm_s0": ["curve.png", "weightings.png", "weightings_len80.png"],
    "copy_ntm_adam_s0": ["curve.png", "weightings.png", "weightings_len40.png", "weightings_len80.png"],
    "copy_lstm_s0": ["curve.png"],
    "copy_lstm_s1": [],
    "copy_lstm_s2": [],
    "copy_dnc_s0": ["curve.png", "weightings.png"],
    "recall_dnc_s0": ["curve.png", "weightings.png"],
    "recall_lstm_s0": ["curve.png"],
    # google-deepmind/dnc's training demo (experiment=dnc_repeat_copy), three seeds
    "repeat_copy_dnc_s0": ["curve.png", "weightings.png"],
    **{f"repeat_copy_dnc_s{seed}": ["curve.png"] for seed in range(1, 3)},
    # the DNC on associative recall for 10,000 steps (experiment=dnc_recall), three seeds
    "recall_dnc_10k_s0": ["curve.png", "weightings.png"],
    **{f"recall_dnc_10k_s{seed}": ["curve.png"] for seed in range(1, 3)},
}
SEED_FAMILIES = ("copy_lstm", *NTM_COPY_FAMILIES, "repeat_copy_dnc", "recall_dnc_10k")  # summary[<family>_seeds] over <family>_s<seed>
RAM_FAMILIES = {  # summary entry -> (run family, its command without seed and run folder)
    "ram_mnist": ("ram_mnist_reference", "qimia memory ram ram_experiment=mnist_reference"),
    "ram_translated_mnist": ("ram_translated_mnist", "qimia memory ram ram_experiment=translated_mnist_reference trainer.max_epochs=60"),
}
RAM_FIGURES = ["curve.png", "glimpses.png"]  # kept for each RAM run as reports/memory/<run>_<figure>
RAM_CURVE = ("epoch", "train/nll", "val/error", "lr")  # curves.json[<RAM run>]["epochs"]: per epoch (lr if logged)


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


def copy_converged(entry: dict) -> bool:
    """The copy bar of the NTM paper's result: at most 0.1 wrong bits per sequence at the end of
    training at the training lengths (1-20) and none on the test sequences of lengths 40 and 80."""
    generalisation = entry.get("generalisation") or {}
    return (entry["final_eval"]["wrong_bits"] <= 0.1 and {"40", "80"} <= set(generalisation)
            and all(generalisation[n]["wrong_bits"] == 0 for n in ("40", "80")))


def relapses(curve: list[dict], solved: float = 0.1, failed: float = 1.0) -> list[int]:
    """Steps of the evaluations, after the first at most ``solved`` wrong bits per sequence at the
    training lengths, with more than ``failed`` (a solved task lost again, as in the NTM's collapses)."""
    first = next((i for i, point in enumerate(curve) if point["wrong_bits"] <= solved), None)
    return [] if first is None else [p["step"] for p in curve[first:] if p["wrong_bits"] > failed]


def seed_runs(names: Iterable[str], family: str) -> list[str]:
    """The names ``<family>_s<seed>`` among ``names`` (a dict gives its keys), sorted."""
    return sorted(k for k in names if re.fullmatch(rf"{re.escape(family)}_s\d+", k))


def seed_stats(summary: dict, family: str, curves: dict | None = None) -> dict | None:
    """Mean and sample std of the final eval and generalisation over the runs ``<family>_s<seed>``."""
    names = [k for k in seed_runs(summary, family) if summary[k].get("final_eval")]
    if not names:
        return None
    runs = [summary[k] for k in names]
    stats: dict = {"runs": names}
    for key in ("wrong_bits", "bits"):
        stats[f"final_{key}"] = _mean_std([r["final_eval"][key] for r in runs])
    for length in runs[0].get("generalisation") or {}:
        stats[f"wrong_bits_len{length}"] = _mean_std([r["generalisation"][length]["wrong_bits"] for r in runs])
    if family.startswith("copy_"):
        stats["converged"] = [k for k in names if copy_converged(summary[k])]
    if curves is not None:
        stats["relapses"] = {k: relapses(curves[k]["eval"]) for k in names if k in curves}
    return stats


def plot_seed_curves(curves: dict, family: str, path: Path) -> bool:
    """One panel per evaluated length: each seed's wrong bits per sequence against training steps
    (symmetric-log axis, so that 0 is on it). False when no run of the family has a curve."""
    runs = [k for k in seed_runs(curves, family) if curves[k]["eval"]]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["wrong_bits", *sorted({k for r in runs for k in curves[r]["eval"][0] if k.startswith("len")},
                                  key=lambda k: int(k[3:]))]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), sharex=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run in runs:
            points = [p for p in curves[run]["eval"] if key in p]
            ax.plot([p["step"] for p in points], [p[key] for p in points], label=run, linewidth=1)
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_title("training lengths" if key == "wrong_bits" else f"length {key[3:]}")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("wrong bits per sequence")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def ram_summary(runs: dict[str, dict], command: str) -> dict:
    """``qimia memory ram`` runs (run name -> its ``results.json``) -> their summary entry: the test
    error of each seed (scored once, with the weights of its lowest validation error), the mean and
    sample std over seeds as ``test_error`` and ``test_error_std``."""
    per_run = {}
    for name, results in sorted(runs.items()):
        curve = results["curve"]
        best = min(curve, key=lambda point: point["val/error"])
        per_run[name] = {"test_error": results["test"]["test/error"], "best_val_error": results["best_val_error"],
                         "epochs": curve[-1]["epoch"], "best_epoch": best["epoch"],
                         "parameters": results["parameters"], "train_seconds": results["train_seconds"]}
    errors = _mean_std([run["test_error"] for run in per_run.values()])
    return {"command": f"{command} seed=<seed>", "test_checkpoint": "best", "test_error": errors["mean"],
            "test_error_std": errors["std"], "seeds": errors["n"], "runs": per_run}


def summarise(results: dict) -> tuple[dict, dict]:
    """One run's ``results.json`` -> its summary entry and its curve entry."""
    curve = [{**{k: p[k] for k in ("step", "sequences", "bits", "wrong_bits")},
              **{k: v["wrong_bits"] for k, v in p.items() if k.startswith("len")}} for p in results["curve"]]
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


def rate_changes(metrics: Path) -> list[dict] | None:
    """The learning rate a run started with and every change of it, ``[{"step", "lr"}, ...]``, from
    the ``lr-<optimizer>`` column that Lightning's ``LearningRateMonitor`` writes to the CSV log
    (first parameter group); ``None`` without such a log."""
    if not metrics.exists():
        return None
    with metrics.open(newline="") as f:
        reader = csv.DictReader(f)
        column = next((c for c in reader.fieldnames or () if c.startswith("lr-")), None)
        if column is None:
            return None
        changes: list[dict] = []
        for row in reader:
            if row[column] and (not changes or float(row[column]) != changes[-1]["lr"]):
                changes.append({"step": int(row["step"]), "lr": float(row[column])})
    return changes


def keep_figures(run: str, figures: Iterable[str]) -> None:
    """Copy those of the run folder's ``figures`` that exist to ``reports/memory/<run>_<figure>``."""
    for figure in figures:
        if (RUNS / run / figure).exists():
            shutil.copy(RUNS / run / figure, DEST / f"{run}_{figure}")


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
        rates = rate_changes(src / "csv" / "metrics.csv")
        if rates and len(rates) > 1:
            summary[run]["rate_changes"] = rates
        keep_figures(run, figures)
    for entry, (family, command) in RAM_FAMILIES.items():
        names = seed_runs((p.name for p in RUNS.glob(f"{family}_s*") if (p / "results.json").exists()), family)
        if names:
            found += names
            runs = {n: json.loads((RUNS / n / "results.json").read_text()) for n in names}
            summary[entry] = ram_summary(runs, command)
            for name in names:
                curves[name] = {"epochs": [{k: p[k] for k in RAM_CURVE if k in p} for p in runs[name]["curve"]]}
                keep_figures(name, RAM_FIGURES)
    if not found:  # never overwrite the committed results with nothing
        raise SystemExit(f"no runs found under {RUNS}/; run reports/memory/reproduce.sh first (nothing written)")
    for family in SEED_FAMILIES:
        stats = seed_stats(summary, family, curves)
        if stats:
            summary[f"{family}_seeds"] = stats
    for family in NTM_COPY_FAMILIES:
        plot_seed_curves(curves, family, DEST / f"{family}_seeds.png")
    (DEST / "summary.json").write_text(json.dumps(summary, indent=1))
    (DEST / "curves.json").write_text(json.dumps(_round(curves), indent=1))
    print(f"updated {', '.join(found)} in {DEST}/summary.json and curves.json")


if __name__ == "__main__":
    main()
