"""Task functions of ``qimia memory ram``, ``qimia memory ut`` and ``qimia memory jacobian``.

Each takes the composed config (``conf/memory/{ram,ut,jacobian}.yaml``), trains through the one
engine (:func:`qimia.training.engine.fit`) in the Hydra job's folder and writes ``results.json``
and figures there. A trained network is rebuilt from its run folder (``config.yaml`` and
``checkpoints/last.ckpt``) with :func:`load_trained`::

    net = load_trained("outputs/memory_ram/ram_mnist/<time>", "ram")
    net = load_trained("outputs/memory_ut/ut_reverse/<time>/ut_act/seed0", "ut")
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from qimia.attention.jacobian import sensitivity_map, sequential_jacobian
from qimia.attention.plots import plot_glimpses, plot_heatmap, plot_ram_curve, plot_ut_curves, sensitivity_grid
from qimia.attention.ram import RAMConfig, RecurrentAttentionModel
from qimia.attention.universal import DeepTransformer, DeepTransformerConfig, UniversalTransformer, UTConfig
from qimia.params import count_parameters


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)``, with the error of the target itself (a
    ``ValueError`` for a bad size, ...) raised as is instead of Hydra's ``InstantiationException``,
    so the command reports it as a user error."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError, FileNotFoundError)):
            raise type(cause)(f"{node.get('_target_')}: {cause}") from cause
        raise


def _config_kwargs(config_class: type, net: DictConfig, **fixed: Any) -> Any:
    """``config_class`` built from the keys of ``net`` it has, plus ``fixed``."""
    names = {f.name for f in fields(config_class)}
    return config_class(**{k: v for k, v in net.items() if k in names}, **fixed)


# --------------------------------------------------------------------------------------------
# building the networks from a config (a job's, or a run folder's config.yaml)


def build_ram_net(cfg: DictConfig, datamodule: Any) -> RecurrentAttentionModel:
    """The RAM of ``cfg.net`` for the data's classes and channels.

    Raises:
        TypeError: ``cfg.net`` has a key :class:`~qimia.attention.ram.RAMConfig` does not know.
    """
    facts = datamodule.net_kwargs
    return RecurrentAttentionModel(RAMConfig(**cfg.net, num_classes=facts["num_classes"],
                                             image_channels=facts["in_chans"]))


def _universal(act: bool) -> Callable[[DictConfig, int], nn.Module]:
    return lambda net, vocab: UniversalTransformer(_config_kwargs(UTConfig, net, vocab=vocab, act=act))


#: the models ``qimia memory ut`` compares: name -> (net config, vocab) -> network
UT_MODELS: dict[str, Callable[[DictConfig, int], nn.Module]] = {
    "ut_act": _universal(act=True),
    "ut": _universal(act=False),
    "transformer": lambda net, vocab: DeepTransformer(_config_kwargs(DeepTransformerConfig, net, vocab=vocab)),
}


#: the ``net`` keys of ``qimia memory ut`` (each model takes those its config has)
UT_NET_KEYS = ({f.name for f in fields(UTConfig)} | {f.name for f in fields(DeepTransformerConfig)}) - {"vocab", "act"}


def build_ut_net(cfg: DictConfig, datamodule: Any, model: str | None = None) -> nn.Module:
    """``UT_MODELS[model]`` (default: the one entry of ``cfg.models``, as in a run folder's config).

    Raises:
        ValueError: an unknown model, or a ``net`` key no model has.
    """
    unknown = sorted(set(cfg.net) - UT_NET_KEYS)
    if unknown:
        raise ValueError(f"net has keys no model of qimia memory ut takes: {unknown}; known: {sorted(UT_NET_KEYS)}.")
    if model is None:
        if len(cfg.models) != 1:
            raise ValueError(f"models={list(cfg.models)}: name the model to build (one of them).")
        model = cfg.models[0]
    if model not in UT_MODELS:
        raise ValueError(f"unknown model {model!r}; choose among {sorted(UT_MODELS)}.")
    return UT_MODELS[model](cfg.net, datamodule.net_kwargs["vocab"])


def build_jacobian_net(cfg: DictConfig, datamodule: Any) -> nn.Module:
    """``cfg.net`` (a ``_target_``), given the data's number of classes for a classifier."""
    return JACOBIAN_MAPS[cfg.map].build_net(cfg, datamodule)


BUILDERS: dict[str, Callable[[DictConfig, Any], nn.Module]] = {
    "ram": build_ram_net, "ut": build_ut_net, "jacobian": build_jacobian_net,
}


def load_trained(run_dir: str | Path, command: str, checkpoint: str = "last.ckpt") -> nn.Module:
    """The network of a finished run of ``qimia memory <command>`` (``ram``, ``ut``, ``jacobian``),
    rebuilt from ``run_dir/config.yaml`` with the weights of ``run_dir/checkpoints/<checkpoint>``
    (read with ``weights_only=True``), in eval mode."""
    run_dir = Path(run_dir)
    if command not in BUILDERS:
        raise ValueError(f"unknown command {command!r}; choose among {sorted(BUILDERS)}.")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    net = BUILDERS[command](cfg, build(cfg.data))
    state = torch.load(run_dir / "checkpoints" / checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return net.eval()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1))


# --------------------------------------------------------------------------------------------
# qimia memory ram


def ram(cfg: DictConfig) -> float | None:
    """``qimia memory ram``: train the RAM, select the weights by validation error, test them.

    Returns the test error (``None`` if training was interrupted).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from qimia.app import output_dir
    from qimia.training import FitClock
    from qimia.training.engine import fit, optimizer_factory, scheduler_factory, seed_run
    from qimia.training.engine import test as engine_test
    from qimia.training.ram import EpochHistory, RAMModule

    if cfg.test_checkpoint not in ("best", "last"):
        raise ValueError(f"test_checkpoint={cfg.test_checkpoint!r}: choose best (lowest val/error) or last.")
    if cfg.figure_images < 1:
        raise ValueError(f"figure_images must be >= 1, got {cfg.figure_images}.")
    out = output_dir()
    seed_run(cfg)
    datamodule = build(cfg.data)
    net = build_ram_net(cfg, datamodule)
    module = RAMModule(net, eval_seed=cfg.eval_seed, optimizer=optimizer_factory(cfg),
                       scheduler=scheduler_factory(cfg), **cfg.task)
    best = ModelCheckpoint(dirpath=str(out / "checkpoints"), filename="best", monitor="val/error", mode="min",
                           save_top_k=1, auto_insert_metric_name=False)
    history, clock = EpochHistory(), FitClock()
    trainer = fit(cfg, module, out, datamodule=datamodule, callbacks=[best, history, clock])
    if trainer.interrupted:
        return None
    tested = "best" if cfg.test_checkpoint == "best" and best.best_model_path else "last"  # no best without validation
    if tested == "best":
        state = torch.load(best.best_model_path, map_location=module.device, weights_only=True)["state_dict"]
        module.load_state_dict(state)
    test = engine_test(trainer, module, datamodule=datamodule)
    if not trainer.is_global_zero:
        return test.get("test/error")
    images = torch.stack([datamodule.test_set[i][0] for i in range(min(cfg.figure_images, len(datamodule.test_set)))])
    module.eval()
    logits, locations = module.classify(images.to(module.device))
    plot_glimpses(images, locations, logits.argmax(-1), out / "glimpses.png")
    plot_ram_curve(history.epochs, out / "curve.png")
    best_score = best.best_model_score
    _write_json(out / "results.json", {
        "test": test,
        "test_checkpoint": tested,  # the weights the test split was scored with
        "best_val_error": None if best_score is None else float(best_score),
        "parameters": count_parameters(net),
        "train_seconds": clock.seconds,  # every part of a resumed fit
        "curve": history.epochs,
    })
    print(f"[ram] test error {test['test/error']:.4f} ({tested} weights); outputs in {out}")
    return test["test/error"]


# --------------------------------------------------------------------------------------------
# qimia memory ut


def _ut_run(cfg: DictConfig, model: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """Train and test one model for one seed in ``run_dir``; its record for the results table."""
    from qimia.training import FitClock, MetricHistory
    from qimia.training.engine import fit, optimizer_factory, scheduler_factory, seed_run
    from qimia.training.universal import SequenceLabellingModule

    seed_run(cfg)
    datamodule = build(cfg.data)
    net = build_ut_net(cfg, datamodule, model)
    module = SequenceLabellingModule(net, tau=cfg.tau if model == "ut_act" else 0.0,
                                     test_splits=datamodule.test_splits, optimizer=optimizer_factory(cfg),
                                     scheduler=scheduler_factory(cfg))
    history, clock = MetricHistory(), FitClock()
    trainer = fit(cfg, module, run_dir, datamodule=datamodule, callbacks=[history, clock])
    test: dict[str, float] = {}
    if not trainer.interrupted:  # one metrics dict per test split (engine.test expects a single one)
        for metrics in trainer.test(module, datamodule=datamodule, verbose=trainer.is_global_zero):
            test.update({k: float(v) for k, v in metrics.items()})
    split = lambda prefix: {k: test.get(f"{prefix}/{k}") for k in ("token_acc", "seq_acc", "ponder_steps")}  # noqa: E731
    return {"model": model, "seed": seed, "parameters": count_parameters(net), "train_seconds": clock.seconds,
            "in_range": split("test"), "longer": split("test_longer"), "curve": history.val,
            "interrupted": trainer.interrupted, "rank": trainer.global_rank}


def _ut_table(cfg: DictConfig, summary: dict[str, dict[str, Any]], seeds: list[int]) -> str:
    data = cfg.data
    lines = [f"# UT+ACT vs fixed depth on `{data.task}` (lengths {data.min_len}-{data.max_len}, longer: "
             f"{data.max_len + 1}-{data.test_len}; {data.steps} steps x {data.batch_size}, seeds {seeds})", "",
             "| model | params | token acc | seq acc | ponder steps | token acc (longer) | seq acc (longer) |",
             "|---|---|---|---|---|---|---|"]
    for model, s in summary.items():
        cell = lambda k: f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}"  # noqa: E731
        lines.append(f"| {model} | {s['parameters']} | {cell('in_range_token_acc')} | {cell('in_range_seq_acc')} | "
                     f"{cell('in_range_ponder_steps')} | {cell('longer_token_acc')} | {cell('longer_seq_acc')} |")
    return "\n".join(lines) + "\n"


def ut(cfg: DictConfig) -> float | None:
    """``qimia memory ut``: every model of ``cfg.models`` for ``cfg.seeds`` seeds from ``cfg.seed``,
    each in ``<job folder>/<model>/seed<k>/``; the table (mean ± sample std over seeds) in
    ``results.md`` and ``results.json``, the validation curves in ``curve.png``.

    ``ckpt_path=last`` resumes every run from its own ``last.ckpt`` (runs without one start
    fresh); an explicit ``ckpt_path`` needs a single model and seed.

    Returns the mean test token accuracy of the first model.
    """
    from qimia.app import output_dir

    unknown = [m for m in cfg.models if m not in UT_MODELS]
    if not cfg.models or unknown:
        raise ValueError(f"models={list(cfg.models)}: choose a non-empty list among {sorted(UT_MODELS)}.")
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}.")
    if cfg.ckpt_path not in (None, "", "last") and len(cfg.models) * cfg.seeds > 1:
        raise ValueError(f"ckpt_path={cfg.ckpt_path!r} names one checkpoint but this job trains "
                         f"{len(cfg.models) * cfg.seeds} runs: use ckpt_path=last, or one model and seeds=1.")
    out = output_dir()
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    runs = []
    for seed in seeds:  # seeds outermost: the models of one seed run back to back
        for model in cfg.models:
            run_dir = out / model / f"seed{seed}"
            run_cfg = copy.deepcopy(cfg)
            run_cfg.seed, run_cfg.seeds, run_cfg.models = seed, 1, [model]
            if cfg.ckpt_path == "last" and not (run_dir / "checkpoints" / "last.ckpt").is_file():
                run_cfg.ckpt_path = None
            print(f"[ut] {model} seed {seed}")
            runs.append(_ut_run(run_cfg, model, seed, run_dir))
    if any(r["interrupted"] for r in runs):
        return None
    if runs[0]["rank"] != 0:
        return runs[0]["in_range"]["token_acc"]
    summary: dict[str, dict[str, Any]] = {}
    for model in cfg.models:
        mine = [r for r in runs if r["model"] == model]
        summary[model] = {"parameters": mine[0]["parameters"]}
        for split in ("in_range", "longer"):
            for key in ("token_acc", "seq_acc", "ponder_steps"):
                values = torch.tensor([r[split][key] for r in mine], dtype=torch.float64)
                std = values.std().item() if len(values) > 1 else 0.0
                summary[model][f"{split}_{key}"] = {"mean": values.mean().item(), "std": std}
    _write_json(out / "results.json", {"summary": summary, "runs": runs})
    table = _ut_table(cfg, summary, seeds)
    (out / "results.md").write_text(table)
    plot_ut_curves(runs, out / "curve.png")
    print(table + f"outputs in {out}")
    return summary[cfg.models[0]]["in_range_token_acc"]["mean"]


# --------------------------------------------------------------------------------------------
# qimia memory jacobian


def _classifier(cfg: DictConfig, datamodule: Any) -> nn.Module:
    return build(cfg.net, num_classes=datamodule.net_kwargs["num_classes"])


def _draw_sequential(cfg: DictConfig, net: nn.Module, datamodule: Any, out: Path) -> dict[str, Any]:
    x = next(iter(datamodule.test_dataloader()))[0][: cfg.figure_inputs]  # (N, T, 1)
    heat = sequential_jacobian(net, x, cfg.method).mean(0)  # (T_out, T_in)
    lag = cfg.data.lag
    plot_heatmap(heat, out / "sequential_jacobian.png", f"||d y_t / d x_t'|| (delay {lag})", "input step t'",
                 "output step t")
    last = heat.shape[0] - 1
    return {"argmax_input_for_last_output": int(heat[last].argmax()), "expected": last - lag,
            "figure": "sequential_jacobian.png"}


def _draw_sensitivity(cfg: DictConfig, net: nn.Module, datamodule: Any, out: Path) -> dict[str, Any]:
    images = torch.stack([datamodule.test_set[i][0] for i in range(min(cfg.figure_inputs, len(datamodule.test_set)))])
    maps = sensitivity_map(net, images, method=cfg.method)  # (N, 1, H, W)
    plot_heatmap(sensitivity_grid(images, maps), out / "sensitivity.png", "digits (top) and |d f_c / d x| (bottom)")
    return {"figure": "sensitivity.png"}


def _classification(net: nn.Module, datamodule: Any, factories: dict[str, Any]) -> Any:
    from qimia.training.tasks import ClassificationModule

    return ClassificationModule(net, num_classes=datamodule.net_kwargs["num_classes"], **factories)


def _regression(net: nn.Module, datamodule: Any, factories: dict[str, Any]) -> Any:
    from qimia.training.regression import RegressionModule

    return RegressionModule(net, **factories)


@dataclass(frozen=True)
class JacobianMap:
    """One kind of implicit-attention figure: how to build its network and its task module
    (``(net, datamodule, {"optimizer", "scheduler"}) -> LightningModule``), the test metric it
    reports, and how to draw it."""

    build_net: Callable[[DictConfig, Any], nn.Module]
    build_module: Callable[[nn.Module, Any, dict[str, Any]], Any]
    metric: str
    draw: Callable[[DictConfig, nn.Module, Any, Path], dict[str, Any]]


JACOBIAN_MAPS: dict[str, JacobianMap] = {
    "sequential": JacobianMap(lambda cfg, dm: build(cfg.net), _regression, "test/loss", _draw_sequential),
    "sensitivity": JacobianMap(_classifier, _classification, "test/acc", _draw_sensitivity),
}


def jacobian(cfg: DictConfig) -> float | None:
    """``qimia memory jacobian``: train ``cfg.net`` on ``cfg.data``, test it, draw its Jacobian map.

    Returns the test metric (MSE for the sequence model, accuracy for the classifier).
    """
    from qimia.app import output_dir
    from qimia.training.engine import fit, optimizer_factory, scheduler_factory, seed_run
    from qimia.training.engine import test as engine_test

    if cfg.map not in JACOBIAN_MAPS:
        raise ValueError(f"map={cfg.map!r}: choose among {sorted(JACOBIAN_MAPS)}.")
    if cfg.figure_inputs < 1:
        raise ValueError(f"figure_inputs must be >= 1, got {cfg.figure_inputs}.")
    kind = JACOBIAN_MAPS[cfg.map]
    out = output_dir()
    seed_run(cfg)
    datamodule = build(cfg.data)
    net = kind.build_net(cfg, datamodule)
    module = kind.build_module(net, datamodule, {"optimizer": optimizer_factory(cfg),
                                                 "scheduler": scheduler_factory(cfg)})
    trainer = fit(cfg, module, out, datamodule=datamodule)
    test = engine_test(trainer, module, datamodule=datamodule)
    if trainer.interrupted or not trainer.is_global_zero:
        return test.get(kind.metric)
    net = net.cpu().eval()
    figure = kind.draw(cfg, net, datamodule, out)
    _write_json(out / "results.json", {"map": cfg.map, "test": test, "parameters": count_parameters(net), **figure})
    print(f"[jacobian] {kind.metric} {test[kind.metric]:.4f}; {figure['figure']} in {out}")
    return test[kind.metric]
