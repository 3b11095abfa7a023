"""``qimia compare``: a comparison is a Hydra sweep over arms x seeds (x any sweep of yours).

    qimia compare experiment=text_lm seeds=5                      # in this process, one run after another
    qimia compare experiment=text_lm seeds=5 hydra/launcher=joblib    # parallel local processes
    qimia compare experiment=text_lm seeds=[5,6]                  # add two seeds to the same comparison
    qimia compare experiment=text_lm optimizer.lr=1e-3,3e-3      # x a learning-rate sweep
    qimia compare ... hydra/launcher=submitit_slurm hydra.launcher.partition=gpu   # a SLURM job per run

The arms are ``compare.mixers`` (one per depth mixer) or ``compare.variants``; every arm is built
from the same family, data, optimizer and budget and parameter-matched to ``compare.reference``
(:mod:`qimia.experiment.arms`). :func:`drive` expands the command into one job per
(arm, seed, sweep point), with overrides ``compare.arm=<arm> seed=<k>``, and hands them to the
chosen Hydra launcher; each job (:func:`run_arm`) trains in its own folder of the comparison
(``outputs/compare/<name>/<arm>[,key=value...]_seed<k>/``) and writes one ``result.json``
atomically. A finished run is reused (its config fingerprint must match, else the error says what
to do), an interrupted one resumes from its ``last.ckpt``, and a run that another process is
training (a live lock, :mod:`qimia.experiment.locks`) is left to it, so concurrent comparisons on
one folder never duplicate or corrupt a run. When the jobs are done, the report of every run in
the folder is written (:mod:`qimia.experiment.report`, the same as ``qimia report dir=...``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from qimia.experiment.arms import Arm, arms_from_config, match_arms, reference_arm
from qimia.experiment.locks import RunLock, lock_owner

RESULT_FILE = "result.json"
WAIT_SECONDS = 5.0  # poll interval while another process finishes a run of this comparison


class StaleResultsError(ValueError):
    """A run folder of the comparison holds results of a different config."""


def seed_list(seeds: Any) -> list[int]:
    """``seeds=5`` -> ``[0, 1, 2, 3, 4]``; ``seeds=[3, 4]`` -> ``[3, 4]``."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of seeds, got {seeds}.")
        return list(range(seeds))
    values = list(seeds)
    if not values or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in values):
        raise ValueError(f"seeds must be a count or a non-empty list of seeds >= 0, got {values}.")
    return values


def run_fingerprint(cfg: DictConfig, arm: Arm, seed: int) -> str:
    """Hash of everything that determines one run's result (not where or how it is launched)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    for key in ("compare", "seeds", "seed", "command", "name", "logger", "threads"):  # (the tuned lr is in optimizer)
        resolved.pop(key, None)
    resolved["trainer"].pop("enable_progress_bar", None)
    payload = json.dumps({"cfg": resolved, "arm": arm.overrides, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def code_hash() -> str:
    """Hash of the installed qimia sources: which code a stored run was made with."""
    import qimia

    digest = hashlib.sha256()
    for source in sorted(Path(qimia.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


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


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# the arms of a config (computed by the driver for the plan, and by every job for its own arm)


@lru_cache(maxsize=8)
def _planned_arms(cfg_json: str) -> tuple[list[Arm], Arm]:
    from qimia.experiment.build import build_datamodule, model_kwargs

    cfg = OmegaConf.create(json.loads(cfg_json))
    arms = arms_from_config(cfg)
    reference = reference_arm(cfg, arms)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    match_arms(cfg.model.name, model_kwargs(cfg, datamodule), arms, reference, match=bool(cfg.compare.match_params))
    return arms, reference


def plan_arms(cfg: DictConfig) -> tuple[list[Arm], Arm]:
    """The parameter-matched arms of ``cfg`` and its reference (cached per config in a process)."""
    relevant = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(relevant, dict)
    for key in ("seeds", "logger", "threads", "command"):
        relevant.pop(key, None)
    relevant["seed"] = 0  # the model's size does not depend on the seed
    relevant["compare"] = {**relevant["compare"], "arm": None}
    return _planned_arms(json.dumps(relevant, default=str))  # (key order kept: the first arm is the reference)


def _refuse_distributed(cfg: DictConfig) -> None:
    devices, strategy = cfg.trainer.get("devices", 1), str(cfg.trainer.get("strategy", "auto"))
    if "ddp" in strategy or (isinstance(devices, int) and devices > 1) or cfg.trainer.get("num_nodes", 1) > 1:
        raise ValueError(
            f"qimia compare runs each (arm, seed) on one device (got trainer.devices={devices}, "
            f"trainer.strategy={strategy}). Spread a comparison over devices with a launcher, one job per run "
            "(hydra/launcher=joblib, submitit_local or submitit_slurm); train one model on several devices with "
            "qimia train trainer=ddp."
        )


# --------------------------------------------------------------------------------------------
# one job: one (arm, seed) run


def run_arm(cfg: DictConfig, run_dir: str | Path, *, sweep: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Train arm ``cfg.compare.arm`` with ``cfg.seed`` in ``run_dir`` and write its ``result.json``.

    Returns the run's record; the stored one if the run was finished before (same fingerprint),
    ``None`` if another live process is training it.

    Raises:
        StaleResultsError: ``run_dir`` holds a finished run of another config.
    """
    from qimia.experiment.train import run_training
    from qimia.training.callbacks import RunProgress

    _refuse_distributed(cfg)
    run_dir = Path(run_dir)
    arms, _ = plan_arms(cfg)
    by_name = {a.name: a for a in arms}
    if cfg.compare.arm not in by_name:
        raise ValueError(f"compare.arm={cfg.compare.arm!r} is not an arm of this comparison; arms: {list(by_name)}.")
    arm = by_name[cfg.compare.arm]
    tuned = (cfg.compare.get("lr_by_arm") or {}).get(arm.name)
    if tuned is not None:  # compare.tune=lr: this arm's rate, chosen on validation
        cfg = cfg.copy()
        cfg.optimizer.lr = float(tuned)
    fingerprint = run_fingerprint(cfg, arm, cfg.seed)
    label = f"{arm.name} seed {cfg.seed}" + "".join(f", {k}={v}" for k, v in (sweep or {}).items())
    result_path = run_dir / RESULT_FILE
    stored = _stored(result_path, fingerprint)
    if stored is not None:
        print(f"[compare] {label}: done before ({result_path}), reused", flush=True)
        return stored
    with RunLock(run_dir) as lock:
        if not lock.acquired:
            print(f"[compare] {label}: another process is training it ({lock_owner(run_dir)}), left to it", flush=True)
            return None
        stored = _stored(result_path, fingerprint)  # finished while this job waited for the lock
        if stored is not None:
            return stored
        resume = (run_dir / "checkpoints" / "last.ckpt").is_file() and cfg.ckpt_path is None
        run_cfg = cfg.copy()
        if resume:
            run_cfg.ckpt_path = "last"
            print(f"[compare] {label}: resuming from {run_dir / 'checkpoints' / 'last.ckpt'}", flush=True)
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one progress line per run instead
        keep: dict[str, Any] = {}
        started = time.time()
        result = run_training(run_cfg, run_dir, net_overrides=arm.overrides, keep=keep,
                              callbacks=[RunProgress(f"[compare] {label}")])
        record = {
            "arm": arm.name, "seed": int(cfg.seed), "sweep": dict(sweep or {}), "fingerprint": fingerprint,
            "code": code_hash(), "arm_overrides": arm.overrides, "knob": arm.knob, "knob_value": arm.knob_value,
            "target_params": arm.target, "reference": reference_arm(cfg, arms).name, "title": cfg.name,
            "phase": cfg.compare.phase, "arm_order": [a.name for a in arms],
            "matched_by": arm.matched_by, "started": started, "finished": time.time(),
            **result.to_dict(),
            "attention": _attention(keep["net"], keep["datamodule"], cfg.compare.attention_batch),
        }
        _write_json(result_path, record)
    return record


def _stored(path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("fingerprint") != fingerprint:
        raise StaleResultsError(
            f"{path} was made with a different config (fingerprint {record.get('fingerprint')} != {fingerprint}). "
            f"Use another folder (hydra.sweep.dir=...), or delete {path.parent} to redo the run."
        )
    if record.get("code") != code_hash():
        print(f"[compare] warning: {path} was made with other qimia code ({record.get('code')} != {code_hash()}); "
              "delete it to redo the run with this code.", flush=True)
    return record


def job(cfg: DictConfig) -> float | None:
    """The Hydra task function of one compare job (the launcher's unit of work): returns the
    run's headline test metric, what a Hydra sweeper would optimise."""
    from qimia.app import output_dir

    sweep = {key: OmegaConf.select(cfg, key) for key in cfg.compare.sweep_keys}
    record = run_arm(cfg, output_dir(), sweep=sweep)
    return None if record is None else record["test"].get(f"test/{record['monitor']}")


# --------------------------------------------------------------------------------------------
# the command: plan, launch, wait, report


def _sweep_keys(overrides: Sequence[str]) -> list[str]:
    return list(sweep_values(overrides))


def sweep_values(overrides: Sequence[str]) -> dict[str, list[str]]:
    """``{key: its values}`` of every sweep among ``overrides`` but Hydra's own
    (``data.chains=2,4,8`` -> ``{"data.chains": ["2", "4", "8"]}``), in their order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {o.get_key_element(): list(o.sweep_string_iterator()) for o in parsed
            if o.is_sweep_override() and not o.get_key_element().startswith("hydra")}


def _first_sweep_points(overrides: Sequence[str]) -> dict[str, str]:
    """``{key: its first value}`` of every sweep among ``overrides`` (``data.chains=2,4,8`` -> ``"2"``)."""
    return {key: values[0] for key, values in sweep_values(overrides).items()}


def comparison_dir(cfg: DictConfig, overrides: Sequence[str]) -> Path:
    """``hydra.sweep.dir`` (or ``hydra.run.dir``) if given, else ``outputs/compare/<name>``."""
    for key in ("hydra.sweep.dir=", "hydra.run.dir="):
        given = [o.split("=", 1)[1] for o in overrides if o.startswith(key)]
        if given:
            return Path(given[-1])
    return Path("outputs") / "compare" / str(cfg.name)


def run_subdir(arm: str, seed: int, sweep: dict[str, Any]) -> str:
    """The folder of one run inside the comparison: ``<arm>[,key=value...]_seed<k>``."""
    return arm + "".join(f",{k}={v}" for k, v in sweep.items()) + f"_seed{seed}"


def _wait_for_others(folder: Path) -> None:
    """Block while a live process elsewhere still trains a run in ``folder``."""
    announced = False
    while True:
        busy = [d for d in sorted(folder.iterdir()) if d.is_dir() and lock_owner(d) is not None
                and not (d / RESULT_FILE).is_file()]
        if not busy:
            return
        if not announced:
            print(f"[compare] waiting for {len(busy)} run(s) that another process is training: "
                  f"{', '.join(d.name for d in busy)}", flush=True)
            announced = True
        time.sleep(WAIT_SECONDS)


def _launch(prog: str, config: str, task: str, overrides: Sequence[str], folder: Path, arms: Sequence[str],
            seeds: Sequence[int], sweep_keys: Sequence[str], extra: Sequence[str] = ()) -> int:
    """One Hydra multirun: a job per arm x seed x sweep point, each in its own folder of ``folder``."""
    from qimia.app import run_app

    mine = [o for o in overrides if not o.startswith(("hydra.sweep.dir=", "hydra.run.dir=", "seed=", "seeds="))]
    subdir = "${compare.arm}" + "".join(f",{k}=${{{k}}}" for k in sweep_keys) + "_seed${seed}"
    with _terminate_stops_the_jobs():
        code = run_app(prog, config, task, [
            "-m", *mine, *extra, f"compare.arm={','.join(arms)}", f"seed={','.join(map(str, seeds))}",
            f"compare.sweep_keys=[{','.join(sweep_keys)}]", f"hydra.sweep.dir={folder}", f"hydra.sweep.subdir='{subdir}'",
        ])
    if code == 0:
        _wait_for_others(folder)
    return code


@contextlib.contextmanager
def _terminate_stops_the_jobs():
    """While the jobs run, SIGTERM (``kill``) raises ``SystemExit`` in the driver, so the launcher
    unwinds and joblib terminates its worker processes. By default SIGTERM ends the driver alone and
    leaves its workers training in the background (Ctrl-C reaches the whole process group anyway).
    Only the main thread can set a handler: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def lr_grid(cfg: DictConfig) -> list[float]:
    """``compare.lr_grid``, or the configured rate divided and multiplied by 3."""
    if cfg.compare.lr_grid:
        return [float(v) for v in cfg.compare.lr_grid]
    lr = float(cfg.optimizer.lr)
    return [lr / 3, lr, lr * 3]


def tune_learning_rates(prog: str, config: str, task: str, cfg: DictConfig, overrides: Sequence[str], folder: Path,
                        arms: Sequence[str], seed: int) -> dict[str, float] | None:
    """``compare.tune=lr``: each arm's rate from ``lr_grid`` with the best final *validation*
    metric on one seed (runs in ``<folder>/tune``); writes ``tuning.md``. ``None`` if a job failed.

    With a sweep of your own (``data.chains=2,4,8``) the rates are chosen at its first point
    (``data.chains=2``) and every point trains with them: the same protocol for every arm."""
    tune_dir = folder / "tune"
    grid = lr_grid(cfg)
    first = _first_sweep_points(overrides)
    mine = [o for o in overrides if not o.startswith("optimizer.lr=") and o.split("=", 1)[0] not in first]
    mine += [f"{key}={value}" for key, value in first.items()]
    code = _launch(prog, config, task, mine, tune_dir, arms, [seed], ["optimizer.lr"],
                   extra=[f"optimizer.lr={','.join(map(repr, grid))}", "compare.phase=tune"])
    if code != 0:
        return None
    records = [json.loads(p.read_text()) for p in sorted(tune_dir.glob(f"*/{RESULT_FILE}"))]
    monitor, mode = records[0]["monitor"], records[0]["monitor_mode"]
    table: dict[str, dict[float, float]] = {arm: {} for arm in arms}
    for r in records:
        final = r["history"]["val"][-1].get(f"val/{monitor}", float("nan")) if r["history"]["val"] else float("nan")
        table[r["arm"]][float(r["sweep"]["optimizer.lr"])] = final
    pick = max if mode == "max" else min
    chosen = {arm: pick((lr for lr in grid if lr in rates), key=lambda lr, rates=rates: rates[lr])
              for arm, rates in table.items() if rates}
    point = "".join(f", at {k}={v}" for k, v in first.items())
    lines = [f"# Learning rate per arm (validation {monitor}, seed {seed}{point}, final weights)", "",
             "| arm | " + " | ".join(f"lr={lr:.3g}" for lr in grid) + " | chosen |",
             "|---|" + "---:|" * (len(grid) + 1)]
    for arm, rates in table.items():
        cells = [f"**{rates[lr]:.4f}**" if lr == chosen.get(arm) else f"{rates.get(lr, float('nan')):.4f}" for lr in grid]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {chosen.get(arm, float('nan')):.3g} |")
    (folder / "tuning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return chosen


def drive(prog: str, config: str, task: str, argv: Sequence[str]) -> int:
    """``qimia compare argv...``: the sweep over arms x seeds (after a per-arm learning-rate
    search with ``compare.tune=lr``), then the report.

    ``--help``, ``--cfg`` and ``--info`` show the config of one job and run nothing.
    """
    from hydra._internal.utils import get_args_parser

    from qimia.app import ConfigError, check_overrides, run_app
    from qimia.experiment.report import report_folder

    args = get_args_parser().parse_intermixed_args(list(argv))
    if args.help or args.hydra_help or args.info or args.cfg or args.shell_completion:
        return run_app(prog, config, task, argv)
    overrides = list(args.overrides)
    try:
        cfg = check_overrides(config, overrides)
        _refuse_distributed(cfg)
        seeds = seed_list(OmegaConf.to_object(cfg.seeds) if OmegaConf.is_list(cfg.seeds) else cfg.seeds)
        arms, reference = plan_arms(cfg)
        if cfg.compare.tune not in (None, "lr"):
            raise ValueError(f"compare.tune={cfg.compare.tune!r}: choose null or lr.")
        if cfg.compare.tune == "lr" and "optimizer.lr" in _sweep_keys(overrides):
            raise ValueError("compare.tune=lr chooses optimizer.lr per arm: do not also sweep optimizer.lr.")
    except (ConfigError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"qimia {prog}: error: {err}", file=sys.stderr)
        return 2
    folder = comparison_dir(cfg, overrides)
    for arm in arms:
        print(f"[compare] arm {arm.name!r}: {arm.knob}={arm.knob_value}, {arm.params:,} parameters "
              f"({100 * arm.relative_gap:+.2f}% vs {reference.name!r})", flush=True)
    names = [a.name for a in arms]
    sweep_keys = _sweep_keys(overrides)
    if not cfg.compare.report_only:
        extra: list[str] = []
        if cfg.compare.tune == "lr":
            chosen = tune_learning_rates(prog, config, task, cfg, overrides, folder, names, seeds[0])
            if chosen is None:
                return 1
            extra = ["compare.lr_by_arm={" + ",".join(f"{a}: {lr!r}" for a, lr in chosen.items()) + "}"]
        code = _launch(prog, config, task, overrides, folder, names, seeds, sweep_keys, extra)
        if code != 0:
            return code
    shown = [o for o in overrides if o != "compare.report_only=true"]
    try:
        summary = report_folder(folder, title=str(cfg.name), command=" ".join(["qimia compare", *shown]))
    except (FileNotFoundError, ValueError) as err:
        print(f"qimia {prog}: error: {err}", file=sys.stderr)
        return 2
    print(summary)
    print(f"[compare] wrote {folder}/results.md, results.csv, runs.csv and the figures", flush=True)
    expected = {run_subdir(a, s, {}) for a, s in itertools.product(names, seeds)} if not sweep_keys else set()
    missing = sorted(d for d in expected if not (folder / d / RESULT_FILE).is_file())
    if missing:
        print(f"[compare] warning: no result yet for {', '.join(missing)}", flush=True)
    return 0
