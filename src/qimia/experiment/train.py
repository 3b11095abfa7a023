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

from qimia.experiment.build import build_datamodule, build_net, build_task, build_trainer, model_kwargs
from qimia.params import count_parameters
from qimia.training import MetricHistory, RNGState, Throughput


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


def _ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``cfg.ckpt_path`` as a file (``"last"``: the run folder's ``checkpoints/last.ckpt``)."""
    if cfg.ckpt_path in (None, ""):
        return None
    if cfg.ckpt_path == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
    else:
        path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r}: no checkpoint at {path}.")
    return str(path)


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
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    net = build_net(cfg, datamodule, **(net_overrides or {}))
    module = build_task(cfg, net, datamodule)
    unit = "tokens" if net.task == "language_modeling" else "samples"
    throughput, history = Throughput(unit), MetricHistory()
    trainer = build_trainer(cfg, output_dir, [throughput, history, RNGState(), *(callbacks or [])])
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=_ckpt_path(cfg, output_dir))
    test: dict[str, float] = {}
    if cfg.test and not trainer.interrupted:
        (metrics,) = trainer.test(module, datamodule=datamodule, verbose=trainer.is_global_zero)
        test = {k: float(v) for k, v in metrics.items()}
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


def final_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state (for comparing runs)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
