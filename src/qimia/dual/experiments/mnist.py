"""MNIST single task (the paper's setting): MLP 784-800-800-10, SGD, batch 128, 3000 updates.

Records the dual-form memory of all three layers, reports test accuracy, the Table 1
procedure on a fixed test subset, and figures for a few test examples.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from qimia.dual.data import batch_indices, load_images
from qimia.dual.experiments.common import accuracy, make_mlp, sgd_train
from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.plots import plot_example
from qimia.dual.recorder import DualRecorder
from qimia.dual.store import DualStore
from qimia.dual.table1 import METRICS, aggregate, table1, to_markdown


@dataclass
class MnistConfig:
    """Hyper-parameters of the single-task experiment (defaults = the paper's setting)."""

    data: str = "mnist"                 # "mnist" (local pickle) or "digits" (sklearn, for quick runs)
    mnist_path: str | None = None
    hidden: tuple[int, ...] = (800, 800)
    batch_size: int = 128
    steps: int = 3000
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    seeds: tuple[int, ...] = (0,)
    dtype: str = "float32"              # store dtype
    test_subset: int = 500              # Table 1 on this many test examples (fixed, seed 0); 0 = all
    scores: tuple[str, ...] = ("contribution", "key")  # Table 1 for each ("key" = approximate)
    device: str = "cpu"                 # where attention is scored
    figures: int = 2                    # test examples plotted (seed of the first run)
    store_dir: str = "runs/dual-mnist"
    keep_stores: bool = False           # keep each seed's store (several GB at full size)
    flush_every: int = 64
    progress: bool = True


def train_recorded(cfg: MnistConfig, seed: int, store_path: Path, resume: bool = False):
    """Train one seed with recording; returns ``(model, store, (train, test), seconds)``."""
    (xtr, ytr), (xte, yte) = load_images(cfg.data, cfg.mnist_path, seed=0)
    torch.manual_seed(seed)
    model = make_mlp(xtr.shape[1], cfg.hidden, 10)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    rec = DualRecorder(model, opt, str(store_path), overwrite=not resume, resume=resume, dtype=cfg.dtype,
                       flush_every=cfg.flush_every, info={"experiment": "mnist", "seed": seed, "config": asdict(cfg)})

    def batch(step: int):
        idx = batch_indices(len(xtr), cfg.batch_size, step, seed)
        return xtr[idx], ytr[idx], idx, 0

    secs = sgd_train(model, opt, batch, cfg.steps, recorder=rec, start=rec.step, desc=f"seed {seed}",
                     progress=cfg.progress)
    return model, rec.close(), ((xtr, ytr), (xte, yte)), secs


def test_subset(n_test: int, size: int) -> torch.Tensor:
    """Fixed random subset of test indices (same for every seed)."""
    if size <= 0 or size >= n_test:
        return torch.arange(n_test)
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(0))[:size].sort().values


def figures(model, store: DualStore, x: torch.Tensor, y: torch.Tensor, out: Path, n: int, score: str | None,
            device: str, prefix: str = "example") -> list[str]:
    """Paper-style figures for the first ``n`` examples of ``x``."""
    paths = []
    queries, logits = layer_inputs(model, x[:n], store.layer_names)
    for j in range(min(n, len(x))):
        topk, totals = {}, {}
        for name in store.layer_names:
            ex = DualExplainer(store, name, score=score, device=device)
            key = f"layer{store.layer(name).index}"
            topk[key] = ex.class_topk(queries[name][j], 10, k=500)
            totals[key] = ex.explain(queries[name][j:j + 1], k=1, num_classes=10).class_totals[0]
        title = (f"test example {j}: target {int(y[j])}, model output {int(logits[j].argmax())}"
                 f" (score: {ex.score}{', APPROXIMATE' if ex.score == 'key' else ''})")
        paths.append(str(plot_example(topk, totals, out / f"{prefix}{j}.png", title=title)))
    return paths


def run(cfg: MnistConfig, out_dir: str | Path) -> dict:
    """All seeds: train + record, accuracy, Table 1, figures. Writes ``table1.json``/``table1.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_seed, results = [], {"config": asdict(cfg), "seeds": []}
    for i, seed in enumerate(cfg.seeds):
        store_path = Path(cfg.store_dir) / f"seed{seed}"
        model, store, (_, (xte, yte)), secs = train_recorded(cfg, seed, store_path)
        acc = accuracy(model, xte, yte)
        sub = test_subset(len(xte), cfg.test_subset)
        t1 = table1(model, store, xte[sub], yte[sub], 10, scores=cfg.scores, device=cfg.device)
        per_seed.append(t1)
        entry = {"seed": seed, "test_acc": acc, "train_seconds": secs, "store_bytes": store.nbytes(),
                 "slots_per_layer": store.num_slots(0), "table1": t1}
        if i == 0 and cfg.figures:
            entry["figures"] = [p for sc in cfg.scores for p in figures(
                model, store, xte[sub], yte[sub], out, cfg.figures, sc, cfg.device, prefix=f"example_{sc}_")]
        results["seeds"].append(entry)
        print(f"seed {seed}: test acc {acc:.2f}%  slots/layer {entry['slots_per_layer']}  "
              f"layer0 argmax=target {t1[cfg.scores[0]]['layer0']['target_all']:.1f}%", flush=True)
        if not cfg.keep_stores:
            shutil.rmtree(store_path)
        _write_summary(cfg, results, per_seed, len(xte), out)     # after every seed: partial runs are usable
    return results


def rewrite_summary(out_dir: str | Path) -> dict:
    """Rewrite ``table1.md`` and the aggregate of ``table1.json`` from the per-seed results in that JSON.

    No training or scoring: for report-format changes (``qimia dual mnist --report-only``).
    """
    out = Path(out_dir)
    path = out / "table1.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `qimia dual mnist --out {out}` first.")
    results = json.loads(path.read_text())
    known = {f.name for f in fields(MnistConfig)}
    cfg = MnistConfig(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in results["config"].items() if k in known})
    for s in results["seeds"]:           # drop metrics that are no longer reported (e.g. output_right)
        for layers in s["table1"].values():
            for row in layers.values():
                for k in [k for k in row if k not in METRICS + ("n_right", "n_wrong")]:
                    del row[k]
    per_seed = [s["table1"] for s in results["seeds"]]
    first = next(iter(per_seed[0][cfg.scores[0]].values()))
    n_test = results.get("n_test", int(first["n_right"] + first["n_wrong"]))   # older files: the subset size
    _write_summary(cfg, results, per_seed, n_test, out)
    return results


def _write_summary(cfg: MnistConfig, results: dict, per_seed: list, n_test: int, out: Path) -> None:
    results["n_test"] = n_test
    results["aggregate"] = {sc: aggregate([t[sc] for t in per_seed]) for sc in cfg.scores}
    accs = torch.tensor([s["test_acc"] for s in results["seeds"]])
    results["test_acc"] = [float(accs.mean()), float(accs.std(unbiased=False))]
    md = (f"MNIST MLP {'-'.join(map(str, (784, *cfg.hidden, 10)))}, SGD lr {cfg.lr}, batch {cfg.batch_size}, "
          f"{cfg.steps} steps, data={cfg.data}, seeds {[s['seed'] for s in results['seeds']]}; test accuracy "
          f"{results['test_acc'][0]:.2f} +- {results['test_acc'][1]:.2f}% (full test set); Table 1 on "
          f"{len(test_subset(n_test, cfg.test_subset))} fixed random test examples.\n\n")
    md += "\n".join(to_markdown(results["aggregate"][sc], len(per_seed), sc) for sc in cfg.scores)
    (out / "table1.md").write_text(md)
    (out / "table1.json").write_text(json.dumps(results, indent=1))
