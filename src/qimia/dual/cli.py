"""``qimia dual <command>``: the experiments and tools of the dual form of gradient descent, each a
Hydra app (configs in ``qimia/conf/dual/``; see :mod:`qimia.app` for the common flags).

    qimia dual mnist hydra.run.dir=reports/dual/mnist                     # Table 1 (5 seeds, all test examples) + figures
    qimia dual mnist recipe=official                                      # ... with the official code's recipe
    qimia dual multitask data.task=digits                                 # joint: task shares + masking
    qimia dual continual data.second=fashion data.fashion_root=DIR         # one task after the other
    qimia dual lm corpus=text_file corpus.path=FILE 'analysis.prompts=["The "]'
    qimia dual verify store=<run folder>/store                            # checksums + exact reconstruction

Each function below takes the composed config and writes into the job's folder
(:func:`qimia.app.output_dir`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _clean_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report a :class:`~qimia.dual.errors.DualFormError` (an unsupported optimizer, a missing or
    corrupt store, ...) as the user error it is: one paragraph, exit status 2."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> Any:
        from qimia.dual.errors import DualFormError

        try:
            return task(cfg)
        except DualFormError as err:
            raise ValueError(f"{type(err).__name__}: {err}") from err

    return run


@_clean_errors
def mnist(cfg: DictConfig) -> float:
    """``qimia dual mnist``: returns the mean test accuracy (%) over the seeds."""
    from qimia.app import output_dir
    from qimia.dual.experiments.mnist import rewrite_summary, run

    out = output_dir()
    results = rewrite_summary(out) if cfg.report_only else run(cfg, out)
    print((out / "report.md").read_text())
    return results["test_acc"][0]


def _two_tasks(cfg: DictConfig) -> float:
    from qimia.app import output_dir
    from qimia.dual.experiments.multitask import run

    out = output_dir()
    results = run(cfg, out)
    print((out / "report.md").read_text())
    return sum(results["acc_final"]) / 2


@_clean_errors
def multitask(cfg: DictConfig) -> float:
    """``qimia dual multitask`` (``mode=joint``): returns the final accuracy (%) averaged over both tasks."""
    return _two_tasks(cfg)


@_clean_errors
def continual(cfg: DictConfig) -> float:
    """``qimia dual continual`` (``mode=continual``): returns the final accuracy (%) averaged over both tasks."""
    return _two_tasks(cfg)


@_clean_errors
def lm(cfg: DictConfig) -> float:
    """``qimia dual lm``: returns the mean training loss of the last 10 logged steps."""
    from qimia.app import output_dir
    from qimia.dual.experiments.lstm_lm import run

    out = output_dir()
    report = run(cfg, out)
    print((out / "report.md").read_text())
    return report["loss_first_last"][1]


@_clean_errors
def verify(cfg: DictConfig) -> float | None:
    """``qimia dual verify store=...``: :func:`qimia.dual.verify.verify_store` (every checksum, then
    ``W_T`` and ``b_T`` of every layer rebuilt from ``W_0`` and the memory against the store's last
    checkpoint); prints and saves (``results.json``) its report.

    Returns the largest relative error (``None`` for a keys-only store, which has no exact form).

    Raises:
        ValueError: ``store`` not given, a wrong ``tolerance``, or the store failed (a checksum, or
            an error above the tolerance).
    """
    from qimia.app import output_dir
    from qimia.dual.verify import verify_store
    from qimia.training.engine import seed_run

    seed_run(cfg)  # threads (and the seed, which verification does not draw from)
    if cfg.tolerance is not None and (isinstance(cfg.tolerance, bool) or not isinstance(cfg.tolerance, (int, float))):
        raise ValueError(f"tolerance={cfg.tolerance!r}: expected a number (e.g. tolerance=1e-5) or null.")
    if OmegaConf.is_missing(cfg, "store"):
        raise ValueError("pass the store to check: qimia dual verify store=<store folder>.")
    report = verify_store(cfg.store, tolerance=cfg.tolerance)
    text = json.dumps(report.to_dict(), indent=1)
    print(text)
    (output_dir() / "results.json").write_text(text)
    report.raise_if_failed()
    errors = [e for check in report.layers.values() for e in (check.rel_err_weight, check.rel_err_bias) if e is not None]
    return max(errors) if errors else None
