"""Table 1 of several ``qimia dual mnist`` runs (one per recipe) side by side, beside the paper's numbers.

Reads each run folder's ``results.json`` (written by ``qimia dual mnist ... hydra.run.dir=<folder>``)
and writes one markdown report: per run the command, the recipe, the test accuracy, the number of
test examples scored (``n_test``) and the seeds; then per score one table whose rows are
(layer, run) and whose columns are the Table 1 metrics (mean +- std over the run's seeds).

The paper is Irie, Csordás, Schmidhuber 2022, "The Dual Form of Neural Networks Revisited:
Connecting Test Time Predictions to Training Patterns via Spotlights of Attention" (ICML 2022).
Its score is the key-query attention, so its numbers sit beside the ``key`` rows. Only the two
cells of its Table 1 quoted in this repository's issue 13 are given; the paper itself was not
available offline when this script was written, and no other cell is filled in from memory.

    python reports/dual/table1_recipes.py reports/dual/mnist_reduced/project \\
        reports/dual/mnist_reduced/official --out reports/dual/mnist_reduced/report.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from qimia.dual.table1 import METRICS

#: (layer, metric) -> percent: the cells of the paper's Table 1 quoted in issue 13 (MNIST, layer 0).
PAPER = {("layer0", "target_right"): 75.1, ("layer0", "output_wrong"): 49.5}
HEADERS = ("=target (all)", "=output (all)", "=target = output (model right)", "=target (model wrong)",
           "=output (model wrong)")


def describe(name: str, res: dict) -> str:
    """One line per run: its recipe, budget, accuracy, test examples scored and seeds."""
    s = res["setup"]
    inputs = "standardised (mean/std, ddof=1)" if s.get("standardize") else "in [0, 1]"
    return (f"- **{name}**: `{res['command']}`. {s['optimizer']} lr {s['lr']} momentum {s['momentum']}, "
            f"gradient clipping {s.get('gradient_clip_val')}, batch {s['batch_size']}, {s['steps']} steps, inputs "
            f"{inputs}; test accuracy {res['test_acc'][0]:.2f} +- {res['test_acc'][1]:.2f}% (full test set); "
            f"Table 1 on n_test = {res['n_test']} of {res['test_set_size']} test examples; seeds "
            f"{[seed['seed'] for seed in res['seeds']]}.")


def table(runs: dict[str, dict], score: str) -> list[str]:
    """Rows (layer, run) for one score, and the paper's row beside the ``key`` score."""
    label = "key (APPROXIMATE: keys only, the paper's score)" if score == "key" else f"{score} (exact)"
    lines = [f"Score = {label}; % of test examples, mean +- std over each run's seeds:", "",
             "| layer | run | " + " | ".join(HEADERS) + " | #wrong |", "|---|---|" + "---|" * (len(HEADERS) + 1)]
    layers = next(iter(runs.values()))["aggregate"][score]
    for layer in layers:
        for name, res in runs.items():
            m = res["aggregate"][score][layer]
            cells = [f"{m[k][0]:.1f} +- {m[k][1]:.1f}" for k in METRICS]
            lines.append(f"| {layer} | {name} | " + " | ".join(cells) + f" | {m['n_wrong'][0]:.0f} |")
        if score == "key" and any(key[0] == layer for key in PAPER):
            cells = [f"{PAPER[(layer, k)]:.1f}" if (layer, k) in PAPER else "n/a" for k in METRICS]
            lines.append(f"| {layer} | paper | " + " | ".join(cells) + " | |")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders of qimia dual mnist (each with results.json)")
    p.add_argument("--out", type=Path, required=True, help="the markdown report to write")
    p.add_argument("--json", type=Path, help="also write the runs' Table 1 here: per run its command, n_test, "
                   "seeds, test accuracy and the aggregate (mean, std) of every cell")
    p.add_argument("--title", default="Table 1 (MNIST), both recipes beside the paper")
    p.add_argument("--note", default="", help="a paragraph placed under the title (e.g. what was reduced)")
    a = p.parse_args()
    runs = {}
    for folder in a.runs:
        path = folder / "results.json"
        if not path.is_file():
            p.error(f"{path} does not exist: pass the hydra.run.dir of a finished qimia dual mnist run.")
        runs[folder.name] = json.loads(path.read_text())
    scores = [s for s in next(iter(runs.values()))["setup"]["scores"] if all(s in r["aggregate"] for r in runs.values())]
    lines = [f"# {a.title}", "", f"Made by: `python reports/dual/table1_recipes.py {shlex.join(sys.argv[1:])}`", ""]
    lines += [a.note, ""] if a.note else []
    lines += [describe(name, res) for name, res in runs.items()] + [""]
    lines.append("Paper: Irie, Csordás, Schmidhuber 2022 (ICML), Table 1; only the cells quoted in issue 13 are "
                 "given (n/a: not available offline here).")
    lines.append("")
    for score in scores:
        lines += table(runs, score)
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))
    if a.json:
        keep = ("command", "setup", "n_test", "test_set_size", "test_acc", "aggregate")
        a.json.write_text(json.dumps({
            "made_by": f"python reports/dual/table1_recipes.py {shlex.join(sys.argv[1:])}",
            "paper": {f"{layer}/{metric}": value for (layer, metric), value in PAPER.items()},
            "runs": {name: {**{k: res[k] for k in keep}, "seeds": [seed["seed"] for seed in res["seeds"]]}
                     for name, res in runs.items()},
        }, indent=2))


if __name__ == "__main__":
    main()
