"""Side-by-side short runs of the pre-Lightning ``qimia dual`` loops (commit 868dc9f) and the current code;
writes ``reports/dual/equivalence.md``.

    OMP_NUM_THREADS=1 QIMIA_DATA_DIR=<folder with mnist.pkl.gz> python reports/dual/equivalence.py
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MNIST = Path(os.environ.get("QIMIA_DATA_DIR", "data")) / "mnist.pkl.gz"
OLD = "868dc9f"


def old_cli(src: Path, *args: str) -> None:
    code = "import sys; from qimia.dual.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *args], check=True, env={**os.environ, "PYTHONPATH": str(src)})


def new_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "qimia", "dual", *args, "threads=1", "trainer.enable_progress_bar=false",
                    "logger=[]", f"data.path={MNIST}"], check=True, cwd=REPO)


with tempfile.TemporaryDirectory() as tmp:
    eq = Path(tmp)
    archive = subprocess.run(["git", "archive", OLD, "src"], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    old_src = eq / "src"
    old_cli(old_src, "mnist", "--mnist", str(MNIST), "--steps", "500", "--seeds", "0", "1", "--test-subset", "200",
            "--figures", "0", "--no-progress", "--store-dir", str(eq / "s1"), "--out", str(eq / "old_mnist"))
    new_cli("mnist", "trainer.max_steps=500", "seeds=[0,1]", "analysis.test_subset=200", "analysis.figures=0",
            f"hydra.run.dir={eq / 'new_mnist'}")
    old_cli(old_src, "multitask", "--mode", "continual", "--mnist", str(MNIST), "--steps-per-task", "200",
            "--test-subset", "50", "--no-progress", "--store-dir", str(eq / "s2"), "--out", str(eq / "old_mt"))
    new_cli("continual", "data.steps_per_task=200", "analysis.test_subset=50", f"hydra.run.dir={eq / 'new_continual'}")
    old_m = json.loads((eq / "old_mnist" / "table1.json").read_text())
    new_m = json.loads((eq / "new_mnist" / "results.json").read_text())
    old_c = json.loads((eq / "old_mt" / "continual.json").read_text())
    new_c = json.loads((eq / "new_continual" / "results.json").read_text())
    pm = lambda a: f"{a[0]:.1f} ± {a[1]:.1f}"
    lines = [
        "# Pre-Lightning loop vs the one training engine: short side-by-side runs",
        "",
        "Regenerate: `OMP_NUM_THREADS=1 QIMIA_DATA_DIR=<folder with mnist.pkl.gz> python reports/dual/equivalence.py`",
        "(runs both codes, the old one from `git archive 868dc9f src`, and writes this file).",
        "",
        "The committed MNIST Table 1 and multi-task reports were made by the hand-written SGD loops that `qimia dual`",
        "had before it moved to Lightning (commit 868dc9f). The current code trains the same networks from the same",
        "initial weights (`seed_everything(seed)` before building the MLP, as `torch.manual_seed(seed)` did) with the",
        "same SGD; the batches come from the Lightning data loader, a shuffle per epoch seeded by `(seed, epoch)` as",
        "`seed * 100003 + epoch` (the old loop: `seed * 1000003 + epoch`). For seed 0 the two orders are the same, so",
        "seed 0 of MNIST, and task 0 of the continual run, are reproduced exactly (test accuracy 91.47% and every Table 1",
        "entry of seed 0 identical; accuracy after task 0 and with task 1 masked identical). Other seeds, and task 1",
        "(whose shuffles the old loop counted from the global step), see other batches, and agree within the spread over",
        "seeds. Short budgets, MNIST from `mnist.pkl.gz`, 2 shared CPU cores, one thread:",
        "",
        "- old: `qimia dual mnist --steps 500 --seeds 0 1 --test-subset 200 --figures 0` and",
        "  `qimia dual multitask --mode continual --steps-per-task 200 --test-subset 50` (commit 868dc9f)",
        "- new: `qimia dual mnist trainer.max_steps=500 'seeds=[0,1]' analysis.test_subset=200 analysis.figures=0` and",
        "  `qimia dual continual data.steps_per_task=200 analysis.test_subset=50`",
        "",
        "## MNIST, MLP 784-800-800-10, SGD lr 0.1, batch 128, 500 steps, seeds 0 and 1",
        "",
        f"Test accuracy (full test set): old {pm(old_m['test_acc'])}%, new {pm(new_m['test_acc'])}% (mean ± std over the 2 seeds).",
        "",
        "Table 1 on 200 fixed test examples, % with the argmax of the per-class attention = target (all examples):",
        "",
        "| score | layer | old | new |",
        "|---|---|---|---|",
    ]
    for score in ("key", "contribution"):
        for layer in ("layer0", "layer1", "layer2"):
            o = old_m["aggregate"][score][layer]["target_all"]
            n = new_m["aggregate"][score][layer]["target_all"]
            lines.append(f"| {score} | {layer} | {pm(o)} | {pm(n)} |")
    f2 = lambda a: f"{a[0]:.2f} / {a[1]:.2f}"
    lines += [
        "",
        "## Continual, MNIST then permuted MNIST, MLP 784-256-256-10, SGD lr 0.02 momentum 0.9, 200 steps per task, seed 0",
        "",
        "| model | old: acc task 0 / task 1 (%) | new: acc task 0 / task 1 (%) |",
        "|---|---|---|",
    ]
    for key, name in (("acc_after_task0", "after task 0"), ("acc_final", "final"),
                      ("acc_reconstructed_all_slots", "rebuilt, all slots"),
                      ("acc_masked_keep_task0", "rebuilt, task-1 slots masked"),
                      ("acc_masked_keep_task1", "rebuilt, task-0 slots masked")):
        lines.append(f"| {name} | {f2(old_c[key])} | {f2(new_c[key])} |")
    lines += ["", "Attention share of task-0 slots (exact contribution score), mean over test examples:", "",
              "| test set | layer | old | new |", "|---|---|---|---|"]
    for test in ("test_task0", "test_task1"):
        for layer in ("layer0", "layer1", "layer2"):
            o = old_c["attention_shares"]["contribution"][test][layer]["share_task0"][0]
            n = new_c["attention_shares"]["contribution"][test][layer]["share_task0"][0]
            lines.append(f"| {test} | {layer} | {o:.3f} | {n:.3f} |")
    (HERE / "equivalence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
