"""MNIST single task, the setting of Table 1 of Irie, Csordás, Schmidhuber 2022, "The Dual Form of
Neural Networks Revisited: Connecting Test Time Predictions to Training Patterns via Spotlights of
Attention" (ICML 2022): MLP 784-800-800-10, batch 128, one of two recipes (``recipe=``):
``project`` (plain SGD lr 0.1, 3000 updates, inputs in [0, 1]) or ``official`` (the authors' code:
SGD momentum 0.9, lr 3e-3, 5000 updates, global-norm clipping 1.0, standardised inputs).

For every seed of ``cfg.seeds`` the MLP is trained by the one training engine while the
:class:`~qimia.dual.lightning.DualRecorderCallback` records the dual-form memory of its three
layers (run folder ``<job>/seed<N>/``: config, Lightning checkpoints, logs); then test accuracy,
the Table 1 procedure (:func:`qimia.dual.table1.table1`) on the whole test set (or a fixed random
subset, ``analysis.test_subset``), and the paper's figures for a few test examples. Writes
``results.json`` (with ``n_test`` and ``seeds``) and ``report.md`` (Table 1, mean +- std over the
seeds) in the job folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qimia.dual.experiments.common import (
    accuracy, check_budget, check_not_resumed, command_line, train_recorded, with_seed, write_json,
)
from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.plots import plot_example
from qimia.dual.store import DualStore
from qimia.dual.table1 import METRICS, aggregate, table1, to_markdown


def test_subset(n_test: int, size: int) -> torch.Tensor:
    """Fixed random subset of test indices (the same for every seed); all of them for ``size <= 0``."""
    if size <= 0 or size >= n_test:
        return torch.arange(n_test)
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(0))[:size].sort().values


def figures(model: torch.nn.Module, store: DualStore, x: torch.Tensor, y: torch.Tensor, out: Path, n: int,
            score: str, device: str, prefix: str) -> list[str]:
    """Paper-style figures (:func:`~qimia.dual.plots.plot_example`) for the first ``n`` examples of ``x``;
    returns their file names in ``out``."""
    paths = []
    queries, logits = layer_inputs(model, x[:n], store.layer_names)
    for j in range(min(n, len(x))):
        topk, totals = {}, {}
        for name in store.layer_names:
            explainer = DualExplainer(store, name, score=score, device=device)
            key = f"layer{store.layer(name).index}"
            topk[key] = explainer.class_topk(queries[name][j], 10, k=500)
            totals[key] = explainer.explain(queries[name][j:j + 1], k=1, num_classes=10).class_totals[0]
        title = (f"test example {j}: target {int(y[j])}, model output {int(logits[j].argmax())}"
                 f" (score: {score}{', APPROXIMATE' if score == 'key' else ''})")
        paths.append(plot_example(topk, totals, out / f"{prefix}{j}.png", title=title).name)
    return paths


def setup_of(cfg: DictConfig, steps: int) -> dict:
    """The facts the report's header states."""
    return {"data": cfg.data.task, "hidden": list(cfg.model.hidden), "batch_size": cfg.data.batch_size,
            "steps": steps, "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1], "lr": cfg.optimizer.lr,
            "momentum": cfg.optimizer.get("momentum", 0.0), "gradient_clip_val": cfg.trainer.gradient_clip_val,
            "standardize": bool(cfg.data.standardize), "test_subset": cfg.analysis.test_subset,
            "scores": list(cfg.analysis.scores)}


def run(cfg: DictConfig, out: Path) -> dict:
    """All seeds: train with recording, accuracy, Table 1, figures (first seed). Rewrites
    ``results.json`` / ``report.md`` after every seed, so a partial run is usable."""
    from qimia.data.image_tasks import ImageTaskDataModule
    from qimia.training.dual import RecordedClassificationModule, classification_batch_meta
    from qimia.training.engine import optimizer_factory, scheduler_factory, seed_run

    check_budget(cfg)
    check_not_resumed(cfg)
    if not cfg.seeds:
        raise ValueError("seeds=[] trains nothing: pass seeds=[0] or a list of seeds.")
    data = ImageTaskDataModule(task=cfg.data.task, path=cfg.data.path, standardize=cfg.data.standardize,
                               batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    data.setup()
    xte, yte = data.test_split
    sub = test_subset(len(yte), cfg.analysis.test_subset)
    results = finished_seeds(cfg, out) or {"command": command_line(), "config": OmegaConf.to_container(cfg, resolve=True),
                                           "seeds": [], "input_mean_std": data.mean_std}
    done = {s["seed"] for s in results["seeds"]}
    if done:
        print(f"{out / 'results.json'} already holds seeds {sorted(done)}: kept, not trained again", flush=True)
    for seed in [s for s in cfg.seeds if int(s) not in done]:
        seed_cfg, run_dir = with_seed(cfg, seed), out / f"seed{seed}"
        store_path = Path(cfg.record.store_dir) / f"seed{seed}" if cfg.record.store_dir else run_dir / "store"
        seed_run(seed_cfg)
        module = RecordedClassificationModule(instantiate(cfg.model), optimizer=optimizer_factory(cfg),
                                              scheduler=scheduler_factory(cfg))
        data.seed = int(seed)
        start = time.perf_counter()
        trainer, store = train_recorded(seed_cfg, module, run_dir, store_path, classification_batch_meta,
                                        data.train_dataloader(), info={"experiment": "mnist", "seed": int(seed)})
        seconds = time.perf_counter() - start
        acc = accuracy(module, xte, yte)
        t1 = table1(module, store, xte[sub], yte[sub], 10, scores=tuple(cfg.analysis.scores), device=cfg.analysis.device)
        entry = {"seed": int(seed), "command": command_line(), "steps": trainer.global_step, "test_acc": acc,
                 "train_seconds": seconds, "store_bytes": store.nbytes(), "slots_per_layer": store.num_slots(0),
                 "table1": t1}
        if not results["seeds"] and cfg.analysis.figures:
            entry["figures"] = [p for score in cfg.analysis.scores for p in figures(
                module, store, xte[sub], yte[sub], out, cfg.analysis.figures, score, cfg.analysis.device,
                prefix=f"example_{score}_")]
        results["seeds"].append(entry)
        print(f"seed {seed}: test acc {acc:.2f}%  slots/layer {entry['slots_per_layer']}  "
              f"layer0 argmax=target {t1[cfg.analysis.scores[0]]['layer0']['target_all']:.1f}%", flush=True)
        if not cfg.record.keep_stores:
            shutil.rmtree(store_path)
        results["setup"] = setup_of(cfg, trainer.global_step)
        write_summary(results, len(yte), out)
    return results


def finished_seeds(cfg: DictConfig, out: Path) -> dict | None:
    """The ``results.json`` of an earlier run in ``out`` whose seeds this run keeps (a run stopped
    between seeds, or more seeds added later: each seed is one whole recording), or None.

    Raises:
        ValueError: that run's setup (data, network, optimizer, budget, scores) differs from ``cfg``'s,
            so its seeds cannot be pooled with this run's.
    """
    path = out / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    before, now = results["setup"], setup_of(cfg, cfg.trainer.max_steps)
    if cfg.trainer.max_steps == -1:  # an epoch budget: the steps are known after training
        now.pop("steps")
    if differ := {k: (before.get(k), v) for k, v in now.items() if before.get(k) != v}:
        raise ValueError(f"{path} holds seeds {[s['seed'] for s in results['seeds']]} of another setup "
                         f"(before, now: {differ}); pass a new hydra.run.dir, or the same settings to add seeds.")
    return results


def rewrite_summary(out: Path) -> dict:
    """Rewrite ``report.md`` and the aggregate of ``results.json`` from the per-seed results in
    that JSON (no training or scoring: for report-format changes, ``report_only=true``)."""
    path = out / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: report_only=true rewrites the report of a finished run; "
                                f"pass hydra.run.dir=<its folder>.")
    results = json.loads(path.read_text())
    for seed in results["seeds"]:  # drop metrics that are no longer reported
        for layers in seed["table1"].values():
            for row in layers.values():
                for k in [k for k in row if k not in METRICS + ("n_right", "n_wrong")]:
                    del row[k]
    # results.json written before test_set_size existed held the test set's size as n_test
    write_summary(results, results.get("test_set_size", results["n_test"]), out)
    return results


def write_summary(results: dict, test_set_size: int, out: Path) -> None:
    """``results.json`` with the aggregate over seeds, ``n_test`` (the test examples Table 1 scored)
    and ``test_set_size``, and ``report.md`` (Table 1 per score)."""
    setup, per_seed = results["setup"], [s["table1"] for s in results["seeds"]]
    scored = len(test_subset(test_set_size, setup["test_subset"]))
    results["n_test"], results["test_set_size"] = scored, test_set_size
    results["aggregate"] = {score: aggregate([t[score] for t in per_seed]) for score in setup["scores"]}
    accs = torch.tensor([s["test_acc"] for s in results["seeds"]])
    results["test_acc"] = [float(accs.mean()), float(accs.std(unbiased=False))]
    inputs = "standardised (training mean/std, ddof=1)" if setup.get("standardize") else "in [0, 1]"
    added = {}  # seeds added to the folder by later commands (see finished_seeds)
    for seed in results["seeds"]:
        if seed.get("command", results["command"]) != results["command"]:
            added.setdefault(seed["command"], []).append(seed["seed"])
    md = (f"Command: `{results['command']}`\n\n"
          + "".join(f"Seeds {seeds} added by `{command}`\n\n" for command, seeds in added.items())
          + f"MNIST MLP {'-'.join(map(str, (784, *setup['hidden'], 10)))}, {setup['optimizer']} lr {setup['lr']} "
          f"momentum {setup['momentum']}, gradient clipping {setup.get('gradient_clip_val')}, batch "
          f"{setup['batch_size']}, {setup['steps']} steps, data={setup['data']} (inputs {inputs}), "
          f"seeds {[s['seed'] for s in results['seeds']]}; test accuracy {results['test_acc'][0]:.2f} +- "
          f"{results['test_acc'][1]:.2f}% (full test set); Table 1 on "
          + ("the full test set" if scored == test_set_size else f"{scored} fixed random test examples")
          + f" ({scored} of {test_set_size}).\n\n")
    md += "\n".join(to_markdown(results["aggregate"][score], len(per_seed), score) for score in setup["scores"])
    (out / "report.md").write_text(md)
    write_json(out / "results.json", results)
