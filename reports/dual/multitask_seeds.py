"""Mean ± std over seeds of ``qimia dual multitask`` / ``qimia dual continual`` runs, one column per setting.

Each setting is a folder whose ``seed<N>/results.json`` files were written by the same command with
``seed=<N> hydra.run.dir=<folder>/seed<N>``. The table gives, per model (after task 0, final, rebuilt
from all slots, each task's slots masked), the accuracy on task 0 / task 1 as mean ± std over the
seeds (``ddof=1``), then the share of the exact attention that the input layer gives the test
example's own task; below it the largest gap over seeds between the model with task 1's slots masked
and the checkpoint after task 0 (zero for plain SGD, as the dual form says) and each run's command.

    python reports/dual/multitask_seeds.py reports/dual/multitask_digits/continual_sgd \\
        reports/dual/multitask_digits/continual_momentum reports/dual/multitask_digits/joint \\
        --out reports/dual/multitask_digits/seeds.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qimia.experiment.stats import mean_std, plus_minus

ROWS = {  # results.json key -> row label
    "acc_after_task0": "after task 0 (checkpoint)",
    "acc_final": "final",
    "acc_reconstructed_all_slots": "rebuilt from W0 + all slots",
    "acc_masked_keep_task0": "rebuilt, task-1 slots masked",
    "acc_masked_keep_task1": "rebuilt, task-0 slots masked",
}


def load_seeds(folder: Path) -> list[dict]:
    """The ``results.json`` of every ``seed<N>/`` of one setting, by seed."""
    runs = [json.loads(p.read_text()) for p in folder.glob("seed*/results.json")]
    if not runs:
        raise SystemExit(f"{folder}: no seed<N>/results.json (run qimia dual ... hydra.run.dir={folder}/seed<N>)")
    setups = {json.dumps({k: v for k, v in r["setup"].items() if k != "seed"}, sort_keys=True) for r in runs}
    if len(setups) > 1:
        raise SystemExit(f"{folder}: its seeds were run with different settings ({sorted(setups)}); "
                         "keep one setting per folder.")
    return sorted(runs, key=lambda r: r["setup"]["seed"])


def cell(runs: list[dict], key: str) -> str:
    """``"mean ± std / mean ± std"`` of a ``[task 0, task 1]`` accuracy over the seeds, ``–`` if absent."""
    if any(key not in r for r in runs):
        return "–"
    return " / ".join(plus_minus(*mean_std([r[key][task] for r in runs])) for task in (0, 1))


def own_task_share(runs: list[dict], layer: str = "layer0") -> str:
    """Share of the exact (contribution) attention of ``layer`` that each test set gives its own task."""
    if any("contribution" not in r["attention_shares"] for r in runs):
        return "–"
    shares = [[r["attention_shares"]["contribution"][f"test_task{t}"][layer][f"share_task{t}"][0] for r in runs]
              for t in (0, 1)]
    return " / ".join(plus_minus(*mean_std(values), digits=3) for values in shares)


def masked_gap(runs: list[dict]) -> str:
    """Largest ``|masked task-1 slots - after task 0|`` over seeds and both tasks (percentage points)."""
    if any("acc_after_task0" not in r for r in runs):
        return "–"
    return f"{max(abs(a - b) for r in runs for a, b in zip(r['acc_masked_keep_task0'], r['acc_after_task0'])):.2f}"


def report(settings: dict[str, list[dict]]) -> str:
    names = list(settings)
    seeds = {name: [r["setup"]["seed"] for r in runs] for name, runs in settings.items()}
    lines = ["Accuracy on task 0 / task 1, % of the full test sets, mean ± std over seeds "
             f"({', '.join(f'{n}: seeds {s}' for n, s in seeds.items())}):", "",
             "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cell(settings[n], key) for n in names) + " |" for key, label in ROWS.items()]
    lines += ["| input layer: exact attention share of the own task (test task 0 / task 1) | "
              + " | ".join(own_task_share(settings[n]) for n in names) + " |",
              "| max over seeds of \\|masked task-1 slots − after task 0\\| (points) | "
              + " | ".join(masked_gap(settings[n]) for n in names) + " |", "", "Commands:", ""]
    lines += [f"- `{r['command']}`" for runs in settings.values() for r in runs]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", type=Path, help="one folder per setting, holding seed<N>/results.json")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: print)")
    args = parser.parse_args(argv)
    text = report({folder.name: load_seeds(folder) for folder in args.settings})
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
