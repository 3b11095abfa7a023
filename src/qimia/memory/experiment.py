"""One ``qimia memory`` run from a composed config, and a trained model rebuilt from its folder.

    results = train(cfg, output_dir)      # fit, test, results.json and figures in output_dir
    model, task = load_run(output_dir)    # the trained network (eval mode) and its task

The run folder holds ``config.yaml`` (the resolved config), ``checkpoints/last.ckpt`` (Lightning's;
resume with ``ckpt_path=last`` or a path), CSV and TensorBoard logs, ``results.json`` (parameters,
test metrics per length, the evaluation curve) and ``curve.png`` / ``weightings*.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from qimia.data.algorithmic import AlgorithmicDataModule, AlgorithmicTask, make_task
from qimia.memory.plots import plot_curve, plot_weightings
from qimia.memory.registry import create_memory_model
from qimia.params import count_parameters
from qimia.training import FitClock, MetricHistory
from qimia.training.engine import fit, optimizer_factory, scheduler_factory, seed_run
from qimia.training.engine import test as engine_test
from qimia.training.sequence import SequenceModule

RESULTS_FILE = "results.json"


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def build_task(cfg: DictConfig) -> AlgorithmicTask:
    """The task of ``cfg.task`` (``name`` plus the task's options)."""
    return make_task(**_plain(cfg.task))


def build_model(cfg: DictConfig, task: AlgorithmicTask) -> nn.Module:
    """The model of ``cfg.model`` (``name`` plus its options), sized for ``task``'s channels."""
    return create_memory_model(**_plain(cfg.model), input_size=task.input_size, output_size=task.output_size)


def _nest(metrics: dict[str, float], stage: str) -> dict[str, Any]:
    """``{"test/bits": 1, "test/len40/bits": 2}`` -> ``{"bits": 1, "len40": {"bits": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        parts = key.removeprefix(f"{stage}/").split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def check_budget(cfg: DictConfig) -> None:
    """Raise ``ValueError`` unless the run has a finite, positive training budget: the task
    streams batches for ever, so ``trainer.max_steps`` (or ``trainer.max_epochs``) must end it."""
    steps, epochs = cfg.trainer.max_steps, cfg.trainer.max_epochs
    if steps == 0 or (steps < 0 and (epochs is None or epochs < 1)):
        raise ValueError(f"trainer.max_steps={steps} with trainer.max_epochs={epochs} trains for "
                         f"{'no' if steps == 0 else 'ever and'} steps: set trainer.max_steps >= 1 (e.g. 2000).")


def train(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.task`` in ``output_dir`` (resuming from ``cfg.ckpt_path``),
    test it on fresh sequences, write ``results.json`` and the figures; returns the results."""
    output_dir = Path(output_dir)
    check_budget(cfg)
    seed_run(cfg)
    task = build_task(cfg)
    # a partial: instantiate would turn the task dataclass into a config
    datamodule: AlgorithmicDataModule = instantiate(cfg.data, _partial_=True)(task=task, seed=cfg.seed)
    net = build_model(cfg, task)
    module = SequenceModule(net, task.lengths, optimizer=optimizer_factory(cfg), scheduler=scheduler_factory(cfg),
                            compile=cfg.compile)
    history, clock = MetricHistory(), FitClock()
    trainer = fit(cfg, module, output_dir, datamodule=datamodule, callbacks=[history, clock])
    test = engine_test(trainer, module, datamodule=datamodule)
    per_step = datamodule.batch_size * trainer.world_size
    results = {
        "task": cfg.task.name,
        "model": cfg.model.name,
        "parameters": count_parameters(net),
        "steps": trainer.global_step,
        "sequences": trainer.global_step * per_step,
        "fit_seconds": clock.seconds,  # every part of a resumed fit
        "test": _nest(test, "test"),
        "optimal_bits": task.optimal_bits(256, task.max_len, torch.Generator().manual_seed(7)),
        "curve": [{"step": p["step"], "sequences": p["step"] * per_step, **_nest(p, "val")}
                  for p in history.val if "val/bits" in p],
        "train": [{"step": p["step"], "sequences": p["step"] * per_step, "bits": p["loss"]} for p in history.train],
    }
    if trainer.is_global_zero:
        (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=1))
        if cfg.plots:
            write_figures(results, net, task, datamodule.eval_lengths, output_dir)
    return results


def write_figures(results: dict[str, Any], net: nn.Module, task: AlgorithmicTask, eval_lengths: list[int],
                  output_dir: Path) -> None:
    """``curve.png``, and for a model with memory ``weightings.png`` (longest training length)
    plus ``weightings_len<L>.png`` per generalisation length."""
    title = f"{results['model']} on {results['task']} (lengths {task.min_len}-{task.max_len})"
    plot_curve(results["curve"], results["train"], title, output_dir / "curve.png")
    if plot_weightings(net, task, task.max_len, output_dir / "weightings.png"):
        for length in eval_lengths:
            plot_weightings(net, task, length, output_dir / f"weightings_len{length}.png")


def load_run(run_dir: str | Path, checkpoint: str = "last.ckpt") -> tuple[nn.Module, AlgorithmicTask]:
    """The trained model of a ``qimia memory`` run folder (in eval mode) and its task, rebuilt
    from ``config.yaml`` and ``checkpoints/<checkpoint>`` (read with ``weights_only=True``).

    Example:
        >>> model, task = load_run("outputs/memory/copy_ntm/2026-12-01_10-00-00")  # doctest: +SKIP
        >>> logits, state = model(task.sample(4, 10, torch.Generator()).inputs)

    Raises:
        FileNotFoundError: the folder has no ``config.yaml`` or no such checkpoint.
    """
    run_dir = Path(run_dir)
    config_path, ckpt_path = run_dir / "config.yaml", run_dir / "checkpoints" / checkpoint
    for path in (config_path, ckpt_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: pass the folder of a qimia memory run.")
    cfg = OmegaConf.load(config_path)
    assert isinstance(cfg, DictConfig)
    task = build_task(cfg)
    model = build_model(cfg, task)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return model.eval(), task
