"""``qimia compare``: the same family with different depth mixers (or QIMIA variants), identical
data, optimizer and budget, several seeds; a results table, learning curves and depth-attention
heatmaps.

Every (arm, seed) run is stored as ``<out_dir>/runs/<arm>_seed<k>.json`` together with a
fingerprint of its config, so an interrupted comparison re-run with the same command skips
finished runs; results made with another config are never silently mixed in or overwritten.
Seeds are the outer loop, so the arms of one seed run back to back (fair throughput ratios on a
shared machine, and a usable partial table if stopped early).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from qimia.experiment.arms import Arm, arms_from_config, match_arms, reference_arm
from qimia.experiment.build import build_datamodule, model_kwargs
from qimia.experiment.report import Summary, summarize, write_report
from qimia.experiment.train import run_training


class StaleResultsError(ValueError):
    """``compare.out_dir`` holds results of a different config."""


def run_fingerprint(cfg: DictConfig, arm: Arm, seed: int) -> str:
    """Hash of everything that determines one run's result."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    for key in ("compare", "seeds", "seed", "command", "name"):
        resolved.pop(key, None)
    resolved["trainer"].pop("enable_progress_bar", None)
    payload = json.dumps({"cfg": resolved, "arm": arm.overrides, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _attention(net: torch.nn.Module, datamodule: Any, batch: int) -> dict[str, list[list[float]]]:
    """``net.depth_attention`` on the first ``batch`` test inputs, as nested lists."""
    if not hasattr(net, "depth_attention"):
        return {}
    loader = torch.utils.data.DataLoader(datamodule.test_set, batch_size=batch)
    inputs = next(iter(loader))[0]
    device = next(net.parameters()).device
    net.eval()
    maps = net.depth_attention(inputs.to(device))
    return {name: m.tolist() for name, m in maps.items()}


def code_hash() -> str:
    """Hash of the installed qimia sources: which code a stored run was made with."""
    import qimia

    digest = hashlib.sha256()
    for source in sorted(Path(qimia.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _finished_run(path: Path, fingerprint: str, *, strict: bool) -> dict[str, Any] | None:
    """The stored record of a finished run, ``None`` if there is none (or, unless ``strict``,
    one made with another config)."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("fingerprint") == fingerprint:
        return record
    if not strict:
        return None
    raise StaleResultsError(
        f"{path} was made with a different config (fingerprint {record.get('fingerprint')} != {fingerprint}). "
        f"Use another compare.out_dir=..., or delete {path.parent} to redo the runs."
    )


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write atomically: a run killed while writing leaves no half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def compare(cfg: DictConfig, out_dir: str | Path, *, command: str | None = None) -> Summary | None:
    """Run (or resume) the comparison of ``cfg`` in ``out_dir`` and write its report there;
    returns the summary (``None`` on the non-zero ranks of a distributed run).

    Args:
        out_dir: the comparison's folder: ``runs/<arm>_seed<k>.json`` (the finished runs),
            ``<arm>/seed<k>/`` (their logs and checkpoints) and the report.
        command: the command line to quote in ``results.md`` (default: the experiment's ``command``).
    """
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}.")
    out_dir = Path(out_dir)
    runs_dir = out_dir / "runs"
    arms = arms_from_config(cfg)
    reference = reference_arm(cfg, arms)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    base = model_kwargs(cfg, datamodule)
    match_arms(cfg.model.name, base, arms, reference, match=bool(cfg.compare.match_params))
    for arm in arms:
        print(
            f"[compare] arm {arm.name!r}: {arm.knob}={arm.knob_value}, {arm.params:,} parameters "
            f"({100 * arm.relative_gap:+.2f}% vs {reference.name!r})"
        )

    records: list[dict[str, Any]] = []
    rank_zero = True  # under DDP every rank runs this loop; only rank 0 records and reports
    for seed in range(cfg.seeds):
        for arm in arms:
            run_cfg = cfg.copy()
            run_cfg.seed = seed
            path, fingerprint = runs_dir / f"{arm.name}_seed{seed}.json", run_fingerprint(run_cfg, arm, seed)
            record = _finished_run(path, fingerprint, strict=not cfg.compare.report_only)
            if record is not None:
                print(f"[compare] {arm.name} seed {seed}: done before ({path}), skipped")
                if record.get("code") != code_hash():
                    print(
                        f"[compare] warning: {path.name} was made with other qimia code "
                        f"({record.get('code')} != {code_hash()}); delete it to redo the run with this code."
                    )
                records.append(record)
                continue
            if cfg.compare.report_only:
                continue
            print(f"[compare] {arm.name} seed {seed} ({seed + 1}/{cfg.seeds})")
            keep: dict[str, Any] = {}
            result = run_training(
                run_cfg, out_dir / arm.name / f"seed{seed}",
                net_overrides=arm.overrides, keep=keep,
            )
            rank_zero = keep["trainer"].is_global_zero
            if rank_zero:
                record = {
                    "arm": arm.name, "seed": seed, "fingerprint": fingerprint, "code": code_hash(),
                    "arm_overrides": arm.overrides,
                    "knob": arm.knob, "knob_value": arm.knob_value, "target_params": arm.target,
                    **result.to_dict(),
                    "attention": _attention(keep["net"], keep["datamodule"], cfg.compare.attention_batch),
                }
                _write_json(path, record)
                records.append(record)

    if not rank_zero:
        return None
    if not records:
        raise FileNotFoundError(f"no finished runs of this config in {runs_dir} (compare.report_only=true).")
    summary = summarize(records, [a.name for a in arms], reference.name)
    write_report(summary, records, out_dir, title=cfg.name, command=command or cfg.command)
    print(summary.markdown())
    print(f"[compare] wrote {out_dir}/results.md, results.csv, runs.csv, learning_curves.png, depth_attention.png")
    return summary


def main(cfg: DictConfig) -> None:
    """``qimia compare``: the comparison in the Hydra job's folder (``outputs/compare/<name>``)."""
    from hydra.core.hydra_config import HydraConfig

    from qimia.app import output_dir

    shown = [o for o in HydraConfig.get().overrides.task if o != "compare.report_only=true"]
    compare(cfg, output_dir(), command=" ".join(["qimia compare", *shown]))
