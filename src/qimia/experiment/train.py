"""One training run from a composed config: ``run_training(cfg) -> RunResult``.

Seeds everything, builds data/network/task/trainer (:mod:`qimia.experiment.build`), fits (resuming
from ``cfg.ckpt_path`` if given), evaluates the final weights on the test split and returns the
numbers ``qimia compare`` tabulates. Logs (CSV, TensorBoard), checkpoints (``last.ckpt``) and the
resolved ``config.yaml`` go to ``output_dir``; :func:`main` is ``qimia train``'s task function
(the Hydra job's folder, ``outputs/train/<name>/<time>``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from qimia.experiment.build import build_datamodule, build_net, build_task, model_kwargs
from qimia.params import count_parameters
from qimia.training import MetricHistory, Throughput
from qimia.training.engine import fit, seed_run
from qimia.training.engine import test as engine_test


NET_FILE = "net.yaml"  # the network's registry name and every kwarg it was built with


@dataclass
class RunResult:
    """What one run produced.

    Attributes:
        test: test metrics of the final weights (``{"test/acc": ...}``), empty if ``cfg.test`` is off.
        monitor: name of the task's headline metric (``acc``, ``bpc``, ``psnr``) and ``mode``.
        params: parameter count of the network.
        throughput: training items per second (``unit``: samples or tokens).
        history: validation metrics per epoch and training loss per logged step.
        output_dir: where logs and checkpoints are.
    """

    test: dict[str, float]
    monitor: str
    monitor_mode: str
    params: int
    throughput: float
    unit: str
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    output_dir: str = ""
    world_size: int = 1
    rank: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_training(
    cfg: DictConfig,
    output_dir: str | Path,
    *,
    net_overrides: dict[str, Any] | None = None,
    callbacks: list[L.Callback] | None = None,
    keep: dict[str, Any] | None = None,
) -> RunResult:
    """Train (and test) the model of ``cfg``.

    Args:
        cfg: a composed config (``qimia.app.compose("train", overrides)``).
        output_dir: the run folder: logs, checkpoints, ``config.yaml``.
        net_overrides: model kwargs that win over the config (``qimia compare``'s arm and matched width).
        callbacks: extra Lightning callbacks.
        keep: if given, receives the built ``datamodule``, ``net``, ``module`` and ``trainer``.
    """
    output_dir = Path(output_dir)
    seed_run(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    net = build_net(cfg, datamodule, **(net_overrides or {}))
    module = build_task(cfg, net, datamodule)
    unit = "tokens" if net.task == "language_modeling" else "samples"
    throughput, history = Throughput(unit), MetricHistory()
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        kwargs = {**model_kwargs(cfg, datamodule), **(net_overrides or {})}
        OmegaConf.save(OmegaConf.create({"name": cfg.model.name, "kwargs": kwargs}), output_dir / NET_FILE)
    trainer = fit(cfg, module, output_dir, datamodule=datamodule, callbacks=[throughput, history, *(callbacks or [])])
    test = engine_test(trainer, module, datamodule=datamodule) if cfg.test else {}
    if keep is not None:
        keep.update(datamodule=datamodule, net=net, module=module, trainer=trainer)
    return RunResult(
        test=test,
        monitor=module.monitor,
        monitor_mode=module.monitor_mode,
        params=count_parameters(net),
        throughput=throughput.per_second,
        unit=unit,
        history=history.state_dict(),
        output_dir=str(output_dir),
        world_size=trainer.world_size,
        rank=trainer.global_rank,
        model_kwargs={**model_kwargs(cfg, datamodule), **(net_overrides or {})},
    )


def main(cfg: DictConfig) -> float | None:
    """``qimia train``: train in the Hydra job's folder and print a one-line summary (rank 0).

    Returns the headline test metric (what a Hydra sweeper optimises), ``None`` without a test.
    """
    from qimia.app import output_dir

    result = run_training(cfg, output_dir())
    if result.rank == 0:
        print(f"[train] {result.params:,} parameters, {result.world_size} process(es); test: {result.test}; "
              f"throughput {result.throughput:,.0f} {result.unit}/s; outputs in {result.output_dir}")
    return result.test.get(f"test/{result.monitor}")


def load_run(run_dir: str | Path, checkpoint: str = "last.ckpt") -> torch.nn.Module:
    """The trained network of a run folder (``qimia train``, or one arm of ``qimia compare``),
    rebuilt from its ``net.yaml`` and ``checkpoints/<checkpoint>`` (read with
    ``weights_only=True``), in eval mode.

    Example:
        >>> net = load_run("outputs/train/digits_resnet/2026-12-01_10-00-00")  # doctest: +SKIP
        >>> logits = net(images)
    """
    from qimia.models import create_model

    run_dir = Path(run_dir)
    spec_path, ckpt_path = run_dir / NET_FILE, run_dir / "checkpoints" / checkpoint
    for path in (spec_path, ckpt_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: pass the folder of a finished qimia train run.")
    spec = OmegaConf.to_container(OmegaConf.load(spec_path), resolve=True)
    assert isinstance(spec, dict)
    net = create_model(spec["name"], **spec["kwargs"])
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return net.eval()


def final_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state (for comparing runs)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
