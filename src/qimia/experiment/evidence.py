"""``qimia evidence``: the one-page answer to "does QIMIA help?", ``reports/evidence/README.md``,
from the finished comparisons of the evidence tasks (``experiment=evidence/<task>``).

    qimia evidence                          # every task folder under reports/evidence that has runs
    qimia evidence dir=outputs/evidence     # another root

One row per task and point of its difficulty knob (``chains=4``, ``depth=12``): the headline test
metric of every arm (mean ± sample std over seeds), the paired differences QIMIA − residual,
QIMIA − DenseFormer and QIMIA − the best other arm (mean per-seed difference and its 95% t-interval,
:func:`qimia.experiment.stats.paired_difference`), the task's floor (what an arm must beat to have
learnt anything: the bigram model of the corpus, the noisy input, chance) and a verdict:

* **helps**: both intervals exclude zero on QIMIA's better side;
* **hurts**: the interval against residual excludes zero on QIMIA's worse side;
* **no difference** otherwise (the note says when one interval alone excludes zero).

A task without finished runs gets a row that says so, and so does each knob point of its command
(``data.chains=2,8``) without runs. Each task's time is the wall clock from its
first run's start to its last run's end, tuning runs included (n/a for runs that did not record it).
"""

from __future__ import annotations

import collections
import csv
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from qimia.experiment.report import (
    Summary,
    load_records,
    metric_scale,
    paired_text,
    summarize,
    sweep_suffix,
)
from qimia.experiment.stats import Paired, mean_std, plus_minus


@dataclass
class Row:
    """One task (at one knob point) of the summary."""

    task: str
    point: str
    summary: Summary | None
    vs_residual: Paired | None
    vs_denseformer: Paired | None
    best_other: str  # the arm other than QIMIA with the best mean (e.g. concat, fine_tune)
    vs_best: Paired | None
    verdict: str
    floor: str
    floor_value: float  # in the metric's logged unit; NaN: none
    minutes: float
    runs: int


def verdict(vs_residual: Paired, vs_denseformer: Paired, mode: str) -> str:
    """``helps`` / ``hurts`` / ``no difference`` (see the module docstring), with a note when only
    one interval excludes zero."""
    def side(p: Paired) -> int:  # +1: QIMIA better, -1: worse, 0: the interval holds zero
        if not p.excludes_zero:
            return 0
        better = p.low > 0 if mode == "max" else p.high < 0
        return 1 if better else -1

    r, d = side(vs_residual), side(vs_denseformer)
    if r == 1 and d == 1:
        return "helps"
    if r == -1:
        return "hurts" + (" (also vs DenseFormer)" if d == -1 else "")
    if r == 1:
        return "no difference (better than residual only)"
    if d != 0:
        return f"no difference ({'better' if d == 1 else 'worse'} than DenseFormer only)"
    return "no difference"


def ngram_bpc(train: Sequence[Hashable], test: Sequence[Hashable], order: int = 1, alpha: float = 0.1) -> float:
    """Bits per symbol (a character of a string, a token id of a tuple) of an order-``order`` Markov
    model of ``train`` on ``test``, with add-``alpha`` smoothing over the symbols of both
    (``order=1``: the bigram model):

        p(c | h) = (n(h c) + alpha) / (n(h) + alpha |V|)
    """
    pairs: collections.Counter[Sequence[Hashable]] = collections.Counter()
    contexts: collections.Counter[Sequence[Hashable]] = collections.Counter()
    for i in range(order, len(train)):
        pairs[train[i - order : i + 1]] += 1
        contexts[train[i - order : i]] += 1
    vocab = len(set(train) | set(test))
    bits = sum(-math.log2((pairs[test[i - order : i + 1]] + alpha) / (contexts[test[i - order : i]] + alpha * vocab))
               for i in range(order, len(test)))
    return bits / (len(test) - order)


def floor(kind: str | None, records: list[dict[str, Any]], folder: Path) -> tuple[str, float]:
    """The task's floor, as text and in the metric's logged unit (NaN: none): ``ngram`` (the
    bigram model of the runs' corpus, bpc), ``psnr_noisy`` (the noisy input's test PSNR, dB),
    ``chance`` (one over the data's classes or modulus, as accuracy)."""
    if not kind:
        return "", float("nan")
    if kind == "ngram":
        from hydra.utils import instantiate

        config = next(folder.rglob("config.yaml"))
        corpus = instantiate(OmegaConf.load(config).data.source).load()
        bpc = ngram_bpc(corpus.train, corpus.test)
        return f"bigram {bpc:.3f} bpc", bpc
    if kind == "psnr_noisy":
        mean, _ = mean_std([r["test"]["test/psnr_noisy"] for r in records if "test/psnr_noisy" in r["test"]])
        return f"noisy input {mean:.2f} dB", mean
    if kind == "chance":
        data = OmegaConf.load(next(folder.rglob("config.yaml"))).data
        classes = data.get("modulus") or data.get("num_classes") or 10
        return f"chance {100 / classes:.1f}%", 1 / classes
    raise ValueError(f"floor={kind!r}: choose ngram, psnr_noisy, chance or null.")


def below_floor(summary: Summary, value: float) -> list[str]:
    """The arms whose mean does not clear the floor ``value`` (in the metric's direction)."""
    if math.isnan(value):
        return []
    return [a.name.split(",")[0] for a in summary.arms
            if (a.metric_mean <= value if summary.mode == "max" else a.metric_mean >= value)]


def wall_minutes(folder: Path) -> float:
    """Minutes from the first run's start to the last run's end under ``folder`` (the
    ``started`` / ``finished`` times of its ``result.json`` records, tuning runs included)."""
    import json

    spans = [json.loads(p.read_text()) for p in folder.rglob("result.json")]
    spans = [(r["started"], r["finished"]) for r in spans if "started" in r]
    return (max(f for _, f in spans) - min(s for s, _ in spans)) / 60 if spans else float("nan")


def command_points(command: str) -> list[str]:
    """The knob points a task's command sweeps, named as :func:`sweep_suffix` names a run's
    (``... data.chains=2,8`` -> ``[",data.chains=2", ",data.chains=8"]``; ``[]`` without a sweep)."""
    import itertools
    import shlex

    from qimia.experiment.compare import sweep_values

    overrides = [t for t in shlex.split(command) if "=" in t and "<" not in t]  # (not paths.data=<mnist-folder>)
    sweeps = sweep_values(overrides)
    return [sweep_suffix({"sweep": dict(zip(sweeps, values))}) for values in itertools.product(*sweeps.values())]


def _not_run(task: str, point: str) -> Row:
    return Row(task, _point_label(point), None, None, None, "", None, "not run", "", float("nan"), float("nan"), 0)


def _point_label(point: str) -> str:
    return point.lstrip(",").replace("model.", "").replace("data.", "")


def task_rows(task: str, spec: DictConfig, folder: Path, expected: Sequence[str] = ()) -> list[Row]:
    """The rows of one task folder: one per point of its sweep (one if it has none), and a
    "not run" row for each point of ``expected`` (its command's, :func:`command_points`) without runs."""
    try:
        records = load_records(folder)
    except FileNotFoundError:
        return [_not_run(task, point) for point in expected or [""]]
    arms = {key: str(spec.get(key) or default) for key, default in
            (("qimia", "qimia"), ("residual", "residual"), ("denseformer", "dwa"))}
    points = sorted({sweep_suffix(r) for r in records} | set(expected), key=_point_order)
    minutes = wall_minutes(folder)
    rows = []
    for point in points:
        chosen = [r for r in records if sweep_suffix(r) == point]
        if not chosen:
            rows.append(_not_run(task, point))
            continue
        try:
            by_residual = summarize(chosen, reference=arms["residual"])
            by_denseformer = summarize(chosen, reference=arms["denseformer"])
        except ValueError as err:  # e.g. a comparison still running: some arm has no finished run yet
            rows.append(Row(task, _point_label(point), None, None, None, "", None, f"incomplete: {err}", "",
                            float("nan"), minutes, len(chosen)))
            continue
        qimia = arms["qimia"] + point
        vs_r = next(a.paired for a in by_residual.arms if a.name == qimia)
        vs_d = next(a.paired for a in by_denseformer.arms if a.name == qimia)
        others = [a for a in by_residual.arms if a.name != qimia]
        pick = max if by_residual.mode == "max" else min
        best = pick(others, key=lambda a: a.metric_mean).name
        vs_b = next(a.paired for a in summarize(chosen, reference=best.split(",")[0]).arms if a.name == qimia)
        assert vs_r is not None and vs_d is not None and vs_b is not None
        rows.append(Row(task, _point_label(point), by_residual, vs_r, vs_d,
                        best.split(",")[0], vs_b, verdict(vs_r, vs_d, by_residual.mode),
                        *floor(spec.get("floor"), chosen, folder), minutes, len(chosen)))
    return rows


def _point_order(point: str) -> tuple:
    """Sweep points in numeric order (``depth=4`` before ``depth=12``)."""
    parts = [p.split("=", 1) for p in point.split(",") if p]
    return tuple((k, float(v)) if _is_number(v) else (k, math.inf) for k, v in parts)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def markdown(rows: list[Row], dirs: dict[str, str], commands: dict[str, str]) -> str:
    """The README: the verdict table, then each task's arms and where its report is."""
    lines = [
        "# Evidence: does QIMIA help?",
        "",
        ("Written by `qimia evidence` from the comparisons in the folders below; every comparison is one "
        "`qimia compare experiment=evidence/<task>` command (each task's `results.md` quotes it). Arms are "
        "parameter-matched within ±1% where reachable (each `results.md` shows every count), trained on the "
        "same data, optimizer and budget, each with its own learning rate chosen on validation "
        "(`tuning.md`). Differences are QIMIA minus the control, paired by seed, with 95% t-intervals and "
        "the number of seeds on which QIMIA is better. Verdict: *helps* needs both intervals to exclude "
        "zero on QIMIA's better side; *hurts*: the interval against residual excludes zero on its worse side. "
        "The last difference is against the best arm other than QIMIA (by mean), whichever it is."),
        "",
        "| task | point | metric | QIMIA − residual | QIMIA − DenseFormer | verdict | QIMIA − best other arm | floor | seeds | time (min) |",
        "|---|---|---|---:|---:|---|---:|---|---:|---:|",
    ]
    for row in rows:
        if row.summary is None:
            lines.append(f"| {row.task} | {row.point} | | | | {row.verdict} | | | {row.runs} | |")
            continue
        scale, digits, unit = _scale(row.summary)
        better = "↑" if row.summary.mode == "max" else "↓"
        seeds = min(a.seeds for a in row.summary.arms)
        below = below_floor(row.summary, row.floor_value)
        floor_cell = row.floor + (f"; not cleared by {', '.join(below)}" if below else "")
        lines.append(
            f"| {row.task} | {row.point} | test {row.summary.metric}{unit} {better} | "
            f"{paired_text(row.vs_residual, scale, digits)} | {paired_text(row.vs_denseformer, scale, digits)} | "
            f"**{row.verdict}** | {row.best_other}: {paired_text(row.vs_best, scale, digits)} | {floor_cell} | {seeds} | {'n/a' if math.isnan(row.minutes) else f'{row.minutes:.0f}'} |"
        )
    lines += ["", "## Every arm", ""]
    for task in dict.fromkeys(r.task for r in rows):
        task_rows_ = [r for r in rows if r.task == task and r.summary is not None]
        lines.append(f"### {task}")
        lines.append("")
        if not task_rows_:
            lines += [f"No finished comparison yet: `{commands.get(task, '')}`.", ""]
            continue
        lines += [f"Report: [{dirs[task]}/results.md]({dirs[task]}/results.md); command: `{commands.get(task, '')}`", ""]
        for row in task_rows_:
            assert row.summary is not None
            scale, digits, unit = _scale(row.summary)
            below = below_floor(row.summary, row.floor_value)
            lines.append(f"| arm{f' ({row.point})' if row.point else ''} | parameters | test {row.summary.metric}{unit} | "
                         f"clears the floor ({row.floor or 'none'}) | seeds |")
            lines.append("|---|---:|---:|---|---:|")
            for a in row.summary.arms:
                name = a.name.split(",")[0]
                clears = "" if math.isnan(row.floor_value) else ("**no**" if name in below else "yes")
                lines.append(f"| {name} | {a.params:,} | "
                             f"{plus_minus(scale * a.metric_mean, scale * a.metric_std, digits)} | {clears} | {a.seeds} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _scale(summary: Summary) -> tuple[float, int, str]:
    """The table's scale, digits and unit suffix of the summary's metric."""
    scale, digits = metric_scale(summary.metric)
    return scale, digits, " (%)" if scale == 100 else ""


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "point", "metric", "arm", "params", "mean", "std", "seeds",
                         "qimia_minus_residual", "low", "high", "qimia_minus_denseformer", "low", "high", "verdict"])
        for row in rows:
            if row.summary is None:
                writer.writerow([row.task, "", "", "", "", "", "", 0, "", "", "", "", "", "", row.verdict])
                continue
            r, d = row.vs_residual, row.vs_denseformer
            assert r is not None and d is not None
            for a in row.summary.arms:
                writer.writerow([row.task, row.point, f"test/{row.summary.metric}", a.name.split(",")[0], a.params,
                                 f"{a.metric_mean:.6f}", f"{a.metric_std:.6f}", a.seeds, f"{r.mean:.6f}", f"{r.low:.6f}",
                                 f"{r.high:.6f}", f"{d.mean:.6f}", f"{d.low:.6f}", f"{d.high:.6f}", row.verdict])


def build(root: str | Path, tasks: DictConfig) -> list[Row]:
    """Every task's rows, in the configured order; writes ``README.md`` and ``summary.csv`` in ``root``."""
    from qimia.app import compose

    root = Path(root)
    commands = {str(t): " ".join(str(compose("models/train", [f"experiment={s.experiment}"]).command).split())
                for t, s in tasks.items()}
    rows = [row for task, spec in tasks.items()
            for row in task_rows(str(task), spec, root / str(spec.dir), command_points(commands[str(task)]))]
    dirs = {str(t): str(s.dir) for t, s in tasks.items()}
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(markdown(rows, dirs, commands))
    write_csv(rows, root / "summary.csv")
    return rows


def main(cfg: DictConfig) -> None:
    """``qimia evidence``: the summary of every task under ``cfg.dir``."""
    rows = build(cfg.dir, cfg.tasks)
    for row in rows:
        print(f"[evidence] {row.task} {row.point}: {row.verdict} ({row.runs} runs)")
    print(f"[evidence] wrote {cfg.dir}/README.md and summary.csv")

