"""``qimia transfer``: transfer recipes compared on the same data, base, optimizer and budget.

1. A base network (``base.model``, default ``qimia_resnet20`` width 8) is trained on the classes
   ``base.labels`` of ``data`` (MNIST digits 0-4), or loaded from ``base.checkpoint``.
2. On the classes ``target.labels`` (digits 5-9) with few labels, every recipe of ``recipes``
   trains a new head from that base for ``seeds`` seeds (each seed draws its own few-label subset
   and head initialisation):

   * ``linear_probe``: frozen base, last-layer features + a linear layer;
   * ``transfer_head``: frozen base, last-layer features + a residual MLP head;
   * ``transfer_head_matched``: the same, its width re-sized (:func:`qimia.models.matched_pair`)
     to the QIMIA head's trainable parameter count (``match: qimia_transfer_head``);
   * ``concat_transfer_head``: a linear map of *all* blocks' pooled features + the MLP head:
     every block, no attention;
   * ``qimia_transfer_head``: frozen base, a QIMIA head reading every block of the base;
   * ``attnres_transfer_head``: the same reads with the attention-residuals preset;
   * ``fine_tune``: ``transfer_head`` with ``freeze_base=false``.

Every network is trained by the one engine (:func:`qimia.training.engine.fit`, a
:class:`~qimia.training.ClassificationModule`); each run has its own folder (``base/``,
``<recipe>/seed<k>/``) with its ``config.yaml``, ``net.yaml`` (the network's registry name and
kwargs: :func:`qimia.experiment.train.load_run` rebuilds it), ``checkpoints/last.ckpt`` and logs. The job folder gets ``results.json``
(per-seed test accuracies), ``results.md`` (mean ± std, ddof=1) and ``accuracy.{png,pdf}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from qimia.data.subsets import LabelSubsetDataModule
from qimia.experiment.stats import mean_std, plus_minus
from qimia.experiment.train import NET_FILE
from qimia.models import create_model, fixed_kwargs, matched_pair
from qimia.models.transfer import build_base
from qimia.params import count_parameters
from qimia.plotting import pyplot, save_figure
from qimia.training import ClassificationModule
from qimia.training.engine import (
    build_trainer,
    fit,
    optimizer_factory,
    scheduler_factory,
    seed_run,
)
from qimia.training.engine import test as engine_test

RECIPE_KEYS = ("model", "match")  # a recipe's own keys; every other key is a model kwarg


def _run_config(cfg: DictConfig, run_dir: Path, **changes: Any) -> DictConfig:
    """``cfg`` for one run: ``changes`` (``seed``, ``trainer.max_epochs``) and ``ckpt_path="last"``
    only where this run folder has a checkpoint to resume."""
    run = cfg.copy()
    for key, value in changes.items():
        OmegaConf.update(run, key, value)
    if run.ckpt_path == "last" and not (run_dir / "checkpoints" / "last.ckpt").is_file():
        run.ckpt_path = None
    return run


def _module(cfg: DictConfig, net: nn.Module, data: LabelSubsetDataModule) -> ClassificationModule:
    return ClassificationModule(net, num_classes=len(data.labels), optimizer=optimizer_factory(cfg),
                                scheduler=scheduler_factory(cfg), compile=bool(cfg.compile))


def _train(cfg: DictConfig, run_dir: Path, model: dict[str, Any], data: LabelSubsetDataModule,
           **changes: Any) -> tuple[nn.Module, float]:
    """Seed, build ``create_model(**model)``, train it on ``data`` in ``run_dir`` (with its
    ``net.yaml``, so :func:`qimia.experiment.train.load_run` rebuilds it); the network and its test
    accuracy."""
    run = _run_config(cfg, run_dir, **changes)
    seed_run(run)
    kwargs = dict(model)
    name = kwargs.pop("name")
    net = create_model(name, **kwargs)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"name": name, "kwargs": kwargs}), run_dir / NET_FILE)
    module = _module(run, net, data)
    trainer = fit(run, module, run_dir, train_dataloaders=data.train_dataloader())
    metrics = engine_test(trainer, module, dataloaders=data.test_dataloader())
    return net, metrics.get("test/acc", float("nan"))


def _evaluate(cfg: DictConfig, run_dir: Path, net: nn.Module, data: LabelSubsetDataModule) -> float:
    """Test accuracy of a trained ``net`` on ``data`` (logged in ``run_dir``)."""
    module = _module(cfg, net, data)
    trainer = build_trainer(cfg, run_dir)
    return engine_test(trainer, module, dataloaders=data.test_dataloader()).get("test/acc", float("nan"))


def _subset(cfg: DictConfig, source: Any, part: DictConfig, split_seed: int) -> LabelSubsetDataModule:
    """``part.labels`` of ``source``: ``part.train_size`` / ``part.test_size`` images drawn with ``split_seed``."""
    data = LabelSubsetDataModule(source, list(part.labels), train_size=part.train_size, test_size=part.test_size,
                                 split_seed=split_seed, batch_size=part.batch_size, num_workers=cfg.data.num_workers,
                                 seed=split_seed)
    data.setup("fit")
    return data


def _recipes(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    recipes = OmegaConf.to_container(cfg.recipes, resolve=True)
    assert isinstance(recipes, dict)
    if cfg.only is not None:
        unknown = [name for name in cfg.only if name not in recipes]
        if unknown:
            raise ValueError(f"only={list(cfg.only)}: no recipes {unknown}; the recipes are {list(recipes)}.")
        recipes = {name: recipes[name] for name in cfg.only}
    for label, recipe in recipes.items():
        if not isinstance(recipe, dict) or "model" not in recipe:
            raise ValueError(f"recipes.{label} must be a dict with a `model` (a registry name), got {recipe!r}.")
    if not recipes:
        raise ValueError("no recipes to run: set recipes (or only=[...]).")
    return recipes


def run_transfer(cfg: DictConfig, out_dir: str | Path, *, command: str = "qimia transfer") -> dict[str, Any]:
    """Train the base (unless ``base.checkpoint``) and every recipe for every seed in ``out_dir``;
    write ``results.json``, ``results.md`` and ``accuracy.{png,pdf}`` there and return the results."""
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}.")
    if cfg.ckpt_path not in (None, "last"):
        raise ValueError(
            f"ckpt_path={cfg.ckpt_path!r}: qimia transfer trains many networks; use ckpt_path=last with "
            "hydra.run.dir=<the interrupted run> to resume each of them, or base.checkpoint=<last.ckpt> to reuse a base."
        )
    out_dir = Path(out_dir)
    recipes = _recipes(cfg)
    source = instantiate(cfg.data)
    source.prepare_data()
    base_data = _subset(cfg, source, cfg.base, cfg.seed)
    image_size = int(base_data.train_set.tensors[0].shape[-1])
    base_kwargs = OmegaConf.to_container(cfg.base.kwargs, resolve=True)
    base_model = {"name": cfg.base.model, **base_kwargs, **base_data.net_kwargs}
    if cfg.base.checkpoint is None:  # step 1: train the base
        _, base_accuracy = _train(cfg, out_dir / "base", base_model, base_data, **{"trainer.max_epochs": cfg.base.epochs})
        base_checkpoint = str(out_dir / "base" / "checkpoints" / "last.ckpt")
    else:  # a trained base: only its test accuracy
        base_checkpoint = str(cfg.base.checkpoint)
        base, _ = build_base(cfg.base.model, {**base_kwargs, **base_data.net_kwargs}, base_checkpoint,
                             base_data.net_kwargs["in_chans"], image_size)
        base_accuracy = _evaluate(cfg, out_dir / "base", base, base_data)
    print(f"[transfer] base {cfg.base.model} on labels {list(cfg.base.labels)}: test accuracy {base_accuracy:.4f}")

    head = {"base": cfg.base.model, "base_kwargs": {**base_kwargs, "num_classes": len(cfg.base.labels)},
            "base_checkpoint": base_checkpoint, "num_classes": len(cfg.target.labels),
            "in_chans": base_data.net_kwargs["in_chans"], "image_size": image_size,
            **OmegaConf.to_container(cfg.head, resolve=True)}
    models: dict[str, dict[str, Any]] = {}
    for label, recipe in recipes.items():
        # the shared head kwargs, then what the model's name fixes (linear_probe: depth=0), then the recipe's own
        own = {k: v for k, v in recipe.items() if k not in RECIPE_KEYS}
        kwargs = {**head, **fixed_kwargs(recipe["model"]), **own}
        if recipe.get("match"):
            pair = matched_pair(recipe["model"], recipe["match"], **kwargs)
            kwargs[pair.knob] = pair.value
        models[label] = {"name": recipe["model"], **kwargs}

    results: dict[str, Any] = {
        "command": command, "base": {"model": base_model, "labels": list(cfg.base.labels), "accuracy": base_accuracy,
                                     "checkpoint": base_checkpoint},
        "target": OmegaConf.to_container(cfg.target, resolve=True), "epochs": cfg.trainer.max_epochs, "recipes": {},
    }
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        target = _subset(cfg, source, cfg.target, seed)
        for label, model in models.items():
            net, accuracy = _train(cfg, out_dir / label / f"seed{seed}", model, target, seed=seed)
            entry = results["recipes"].setdefault(label, {"model": model, "seeds": [], "accuracy": []})
            entry["seeds"].append(seed)
            entry["accuracy"].append(accuracy)
            entry["trainable"] = count_parameters(net, trainable_only=True)
            print(f"[transfer] seed {seed} {label:<24} accuracy {accuracy:.4f}")
    for entry in results["recipes"].values():
        entry["mean"], entry["std"] = mean_std(entry["accuracy"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "results.md").write_text(markdown(results))
    plot_accuracy(results, out_dir / "accuracy.png")
    print(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    """The recipes' table: trainable parameters and test accuracy (mean ± std over seeds, ddof=1)."""
    base, target, recipes = results["base"], results["target"], results["recipes"]
    seeds = max(len(e["accuracy"]) for e in recipes.values())
    kwargs = ", ".join(f"{k}={v}" for k, v in base["model"].items() if k != "name")
    lines = [
        f"Command: `{results['command']}`",
        "",
        f"Base `{base['model']['name']}` ({kwargs}) trained on labels {base['labels']}: test accuracy "
        f"{base['accuracy']:.4f}. Target: labels {target['labels']}, {target['train_size']} training images, "
        f"{target['test_size']} test images, {results['epochs']} epochs, {seeds} seeds.",
        "",
        "| recipe | trainable params | test accuracy (mean ± std over seeds) |",
        "|---|---:|---|",
    ]
    for label, entry in recipes.items():
        lines.append(f"| {label} | {entry['trainable']:,} | {plus_minus(entry['mean'], entry['std'], 4)} |")
    return "\n".join(lines) + "\n"


def plot_accuracy(results: dict[str, Any], path: Path) -> None:
    """Bar chart of each recipe's test accuracy, mean ± std over seeds, every seed as a dot."""
    plt = pyplot()
    recipes = results["recipes"]
    fig, ax = plt.subplots(figsize=(1.2 * len(recipes) + 2, 3.5))
    for i, entry in enumerate(recipes.values()):
        std = entry["std"] if entry["std"] == entry["std"] else 0.0  # one seed: no error bar
        ax.bar(i, entry["mean"], yerr=std, capsize=4, color="C0", alpha=0.6)
        ax.plot([i] * len(entry["accuracy"]), entry["accuracy"], "k.", markersize=4)
    ax.set_xticks(range(len(recipes)), list(recipes), rotation=30, ha="right")
    ax.set(ylabel="test accuracy", title="transfer recipes (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(cfg: DictConfig) -> None:
    """``qimia transfer``: the experiment in the Hydra job's folder."""
    from hydra.core.hydra_config import HydraConfig

    from qimia.app import output_dir

    shown = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]
    run_transfer(cfg, output_dir(), command=" ".join(["qimia transfer", *shown]))
