"""Tables and plots of a comparison: ``results.md``, ``results.csv``, ``runs.csv``,
``learning_curves.{png,pdf}`` and ``depth_attention.{png,pdf}``, from the finished runs' records;
:func:`main` is ``qimia report``, :func:`report_folder` what ``qimia compare`` calls at its end.

    qimia report dir=outputs/compare/digits_resnet        # every finished run JSON under the folder
    qimia report dir=... arms=[residual,qimia] reference=residual

One row per arm (and point of any extra sweep, e.g. ``qimia,optimizer.lr=0.001``). Spreads over
seeds are sample standard deviations (``ddof=1``) everywhere, in the tables and the bands of the
figures; with one seed there is none, and the tables say ``n/a``. Each arm is also compared with
the reference seed by seed (:func:`qimia.experiment.stats.paired_difference`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from qimia.experiment.arms import TOLERANCE as MATCH_TOLERANCE
from qimia.experiment.stats import Paired, mean_std, paired_difference, plus_minus
from qimia.plotting import pyplot, save_figure

#: what a finished run's JSON holds (``qimia compare``'s ``<arm>_seed<k>/result.json``)
RECORD_KEYS = frozenset({"arm", "seed", "test", "monitor", "monitor_mode", "unit", "params", "throughput",
                         "target_params", "knob", "knob_value"})




def run_label(record: dict[str, Any]) -> str:
    """A run's row in the tables: its arm, plus the point of any extra sweep (``qimia,optimizer.lr=0.001``)."""
    return record["arm"] + sweep_suffix(record)


def sweep_suffix(record: dict[str, Any]) -> str:
    """The run's point of any extra sweep: ``",optimizer.lr=0.001"`` (empty without a sweep)."""
    return "".join(f",{k}={v}" for k, v in (record.get("sweep") or {}).items())


@dataclass
class ArmSummary:
    """One row: an arm (at one sweep point) over its seeds."""

    name: str
    params: int
    param_gap: float
    knob: str
    knob_value: int
    metric_mean: float
    metric_std: float
    throughput_mean: float
    throughput_std: float
    throughput_ratio: float
    throughput_ratio_std: float
    seeds: int
    paired: Paired | None  # the per-seed difference to the reference (None for the reference)


@dataclass
class Summary:
    """Per-arm mean and std (over seeds, ddof=1) of the headline test metric and of throughput,
    and each arm's paired difference to the reference (:func:`qimia.experiment.stats.paired_difference`)."""

    metric: str
    mode: str
    unit: str
    reference: str
    arms: list[ArmSummary]

    def markdown(self) -> str:
        better = "higher is better" if self.mode == "max" else "lower is better"
        scale, digits = metric_scale(self.metric)
        label = f"test {self.metric}{' (%)' if scale == 100 else ''}"
        lines = [
            f"| arm | width knob | parameters | vs {self.reference} | {label} ({better}) | "
            f"paired difference to {self.reference} (95% t-interval; seeds better) | "
            f"throughput ({self.unit}/s) | throughput / {self.reference} (per seed) | seeds |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for a in self.arms:
            lines.append(
                f"| {a.name} | {a.knob.split(',')[0]}={a.knob_value}{a.knob[len(a.knob.split(',')[0]):]} | {a.params:,} | "
            f"{100 * a.param_gap:+.2f}%{'' if abs(a.param_gap) <= MATCH_TOLERANCE else ' (±1% not reachable)'} | "
                f"{plus_minus(scale * a.metric_mean, scale * a.metric_std, digits)} | "
                f"{paired_text(a.paired, scale, digits)} | "
                f"{plus_minus(a.throughput_mean, a.throughput_std, 0)} | "
                f"{plus_minus(a.throughput_ratio, a.throughput_ratio_std, 2)} | {a.seeds} |"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.markdown()


def metric_scale(metric: str) -> tuple[float, int]:
    """How a metric is shown in the tables: the scale from its logged value and the digits
    (accuracy in percent with 2 digits; everything else as logged with 4)."""
    return (100.0, 2) if metric == "acc" else (1.0, 4)


def paired_text(paired: Paired | None, scale: float, digits: int) -> str:
    """``"+0.0647 [-0.0485, +0.1780]; 1/5"``: the paired difference, its interval and the seeds better."""
    if paired is None:
        return "(reference)"
    if paired.n == 0:
        return "n/a (no common seeds)"
    interval = "n/a" if math.isnan(paired.low) else f"[{scale * paired.low:+.{digits}f}, {scale * paired.high:+.{digits}f}]"
    return f"{scale * paired.mean:+.{digits}f} {interval}; {paired.wins}/{paired.n}"


def summarize(records: list[dict[str, Any]], arms: list[str] | None = None, reference: str | None = None) -> Summary:
    """The rows of ``records``: one per arm (and extra sweep point), ``arms`` (base arm names) in
    that order if given, else the reference first and the others in the order found.

    Args:
        reference: the arm every other is compared with at the same sweep point (default: the
            records' own ``reference``, else the first arm).

    Raises:
        ValueError: no records, an arm without runs, or no run of the reference.
    """
    if not records:
        raise ValueError("no finished runs to summarise.")
    first = records[0]
    metric, mode, unit = first["monitor"], first["monitor_mode"], first["unit"]
    found = list(dict.fromkeys(r["arm"] for r in records))
    reference = reference or first.get("reference") or found[0]
    if arms is None:  # the comparison's own order (its records carry it), the reference first
        order = first.get("arm_order") or found
        arms = sorted(found, key=lambda a: (a != reference, order.index(a) if a in order else len(order)))
    missing = [a for a in [*arms, reference] if a not in found]
    if missing:
        raise ValueError(f"no finished runs of arms {sorted(set(missing))}; the runs are of {found}.")
    chosen = [r for r in records if r["arm"] in arms]
    labels = sorted(dict.fromkeys(run_label(r) for r in chosen), key=lambda lab: arms.index(lab.split(",")[0]))
    value = {(run_label(r), r["seed"]): r["test"].get(f"test/{metric}", float("nan")) for r in records}
    throughput = {(run_label(r), r["seed"]): r["throughput"] for r in records}
    rows = []
    for label in labels:
        runs = [r for r in chosen if run_label(r) == label]
        ref_label = reference + sweep_suffix(runs[0])
        seeds = [r["seed"] for r in runs]
        ref_seeds = {s for (lab, s) in value if lab == ref_label}
        m_mean, m_std = mean_std([value[label, s] for s in seeds])
        t_mean, t_std = mean_std([throughput[label, s] for s in seeds])
        # ratio to the reference run of the same seed (run back to back): robust to a shared machine's load
        r_mean, r_std = mean_std([throughput[label, s] / throughput[ref_label, s] for s in seeds if s in ref_seeds])
        paired = None if label == ref_label else paired_difference(
            {s: value[label, s] for s in seeds}, {s: value[ref_label, s] for s in ref_seeds}, mode=mode)
        target = runs[0]["target_params"]
        knob = runs[0]["knob"] + "".join(f", {k}={v:.4g}" if isinstance(v, float) else f", {k}={v}"
                                         for k, v in runs[0].get("matched_by", {}).items())
        rows.append(ArmSummary(
            label, runs[0]["params"], (runs[0]["params"] - target) / target, knob, runs[0]["knob_value"],
            m_mean, m_std, t_mean, t_std, r_mean, r_std, len(runs), paired,
        ))
    return Summary(metric, mode, unit, reference, rows)


def write_report(summary: Summary, records: list[dict[str, Any]], out_dir: Path, *, title: str, command: str) -> None:
    """``results.md``, ``results.csv``, ``runs.csv`` and the figures (png and pdf) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = [
        f"# qimia compare: {title}",
        "",
        f"Command: `{command}`",
        "",
        f"Test {summary.metric} of the final weights, mean ± sample std (ddof=1; n/a for one seed) over seeds; "
        f"the paired difference to `{summary.reference}` is the mean per-seed difference with its 95% t-interval "
        f"and the number of seeds on which the arm is better; parameter counts matched to "
        f"`{summary.reference}` through each model's width knob; training throughput ({summary.unit}/s, "
        "forward + backward + update); its ratio is taken per seed against the reference run of the same seed, "
        "then averaged.",
        "",
        summary.markdown(),
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![depth attention](depth_attention.png)",
        "",
    ]
    (out_dir / "results.md").write_text("\n".join(text))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "knob", "knob_value", "params", "param_gap", "metric", "mean", "std",
                         "paired_mean", "paired_low", "paired_high", "paired_wins", "paired_n",
                         "throughput_mean", "throughput_std", "unit", "throughput_ratio", "throughput_ratio_std", "seeds"])
        for a in summary.arms:
            p = a.paired or Paired(0, float("nan"), float("nan"), float("nan"), 0)
            writer.writerow([a.name, a.knob, a.knob_value, a.params, f"{a.param_gap:.6f}", f"test/{summary.metric}",
                             f"{a.metric_mean:.6f}", f"{a.metric_std:.6f}", f"{p.mean:.6f}", f"{p.low:.6f}",
                             f"{p.high:.6f}", p.wins, p.n, f"{a.throughput_mean:.2f}", f"{a.throughput_std:.2f}",
                             summary.unit, f"{a.throughput_ratio:.4f}", f"{a.throughput_ratio_std:.4f}", a.seeds])
    rows = {a.name for a in summary.arms}
    shown = [r for r in records if run_label(r) in rows]
    with open(out_dir / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "seed", "params", f"test/{summary.metric}", "throughput"])
        for r in shown:
            writer.writerow([run_label(r), r["seed"], r["params"], r["test"].get(f"test/{summary.metric}"),
                             f"{r['throughput']:.2f}"])
    plot_learning_curves(shown, [a.name for a in summary.arms], summary.metric, out_dir / "learning_curves.png")
    plot_depth_attention(shown, out_dir / "depth_attention.png")


# how each headline metric is shown: (axis label with its unit, scale from the logged value)
METRIC_AXES = {"acc": ("validation accuracy (%)", 100.0), "bpc": ("validation bits per character", 1.0),
               "psnr": ("validation PSNR (dB)", 1.0), "loss": ("validation loss (nats)", 1.0)}


def plot_learning_curves(records: list[dict[str, Any]], arm_names: list[str], metric: str, path: Path) -> None:
    """Validation ``metric`` (in the tables' units) and training loss against the step: mean over
    seeds, band = the sample std (``ddof=1``; no band for one seed). The training panel is left
    out when the runs logged too few training steps to draw a curve."""
    import numpy as np

    plt = pyplot()

    label, scale = METRIC_AXES.get(metric, (f"validation {metric}", 1.0))
    has_train = any(len(r.get("history", {}).get("train", [])) > 1 for r in records)
    fig, axes = plt.subplots(1, 2 if has_train else 1, figsize=(11 if has_train else 5.5, 4), squeeze=False)
    ax_val, ax_train = axes[0, 0], (axes[0, 1] if has_train else None)
    for name in arm_names:
        runs = [r for r in records if run_label(r) == name]
        for ax, key, series in ((ax_val, f"val/{metric}", "val"), (ax_train, "loss", "train")):
            if ax is None:
                continue
            curves = [[(p["step"], p[key]) for p in r.get("history", {}).get(series, []) if key in p] for r in runs]
            length = min((len(c) for c in curves), default=0)
            if length == 0:
                continue
            steps = np.array([s for s, _ in curves[0][:length]])
            values = np.array([[v for _, v in c[:length]] for c in curves]) * (scale if series == "val" else 1.0)
            mean = values.mean(0)
            ax.plot(steps, mean, label=name, marker="o" if series == "val" else None, markersize=3)
            if len(values) > 1:
                std = values.std(0, ddof=1)
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax_val.set(xlabel="optimizer step", ylabel=label, title="validation (mean ± sd over seeds)")
    if ax_train is not None:
        ax_train.set(xlabel="optimizer step", ylabel="training loss (nats)", title="training", yscale="log")
    for ax in (a for a in (ax_val, ax_train) if a is not None):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_depth_attention(records: list[dict[str, Any]], path: Path) -> None:
    """Heatmaps of each arm's depth attention (its lowest seed): row = reader (block, then
    readout), column = slot it reads (0 = the stage input)."""
    import numpy as np

    plt = pyplot()

    first = {}
    for r in records:
        first.setdefault(run_label(r), r["seed"])
        first[run_label(r)] = min(first[run_label(r)], r["seed"])
    panels = [(run_label(r), name, np.array(m)) for r in records if r["seed"] == first[run_label(r)]
              for name, m in r.get("attention", {}).items()]
    if not panels:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no arm records depth attention (residual models have none)", ha="center", va="center")
        save_figure(fig, path)
        return
    arms = list(dict.fromkeys(arm for arm, _, _ in panels))
    per_arm = max(sum(1 for a, _, _ in panels if a == arm) for arm in arms)
    fig, axes = plt.subplots(len(arms), per_arm, figsize=(3.2 * per_arm, 3.0 * len(arms)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, arm in enumerate(arms):
        for j, (_, name, matrix) in enumerate(p for p in panels if p[0] == arm):
            ax = axes[i, j]
            ax.axis("on")
            image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
            rows, slots = matrix.shape
            readout = rows == slots  # QIMIA: blocks 1..L then the readout; DenseFormer: blocks only
            labels = [f"b{k + 1}" for k in range(rows - readout)] + (["out"] if readout else [])
            ax.set_yticks(range(rows), labels)
            ax.set_xticks(range(matrix.shape[1]))
            ax.set_xlabel("slot read (0 = input)")
            ax.set_ylabel("reader")
            ax.set_title(f"{arm}: {name}", fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.046).set_label("attention weight")
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# qimia report: any folder of finished runs


def load_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every finished run's record under ``folder`` (any ``*.json`` holding :data:`RECORD_KEYS`,
    found recursively), in path order; other JSON files are skipped.

    Raises:
        FileNotFoundError: no such folder, or no run record in it.
        ValueError: two records of the same arm and seed (two comparisons under one folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dir={str(folder)!r} is not a folder; pass the folder of a comparison (dir=outputs/compare/<name>).")
    records, seen = [], {}
    for path in sorted(folder.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(record, dict) or not RECORD_KEYS <= set(record) or record.get("phase") == "tune":
            continue  # (compare.tune=lr's search runs are reported in tuning.md)
        key = (run_label(record), record["seed"])
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {path} are both arm {key[0]!r} seed {key[1]}: the folder holds more than one "
                "comparison; pass dir=<one of them>."
            )
        seen[key] = path
        records.append(record)
    if not records:
        raise FileNotFoundError(f"no finished run records (*.json with {sorted(RECORD_KEYS)}) under {folder}.")
    metrics = sorted({r["monitor"] for r in records})
    if len(metrics) > 1:
        raise ValueError(f"the runs under {folder} report different metrics {metrics}; pass dir=<one comparison>.")
    return records


def report_folder(folder: str | Path, *, command: str, out_dir: str | Path | None = None, title: str | None = None,
                  arms: list[str] | None = None, reference: str | None = None) -> Summary:
    """Summarise every finished run under ``folder`` (:func:`load_records`, :func:`summarize`) and
    write the report (:func:`write_report`) to ``out_dir`` (default: ``folder`` itself).

    Args:
        command: the command line quoted in ``results.md``.
        title: default: the runs' own ``title`` (the experiment's name), else the folder's name.
    """
    records = load_records(folder)
    summary = summarize(records, arms, reference)
    title = title or records[0].get("title") or Path(folder).resolve().name
    write_report(summary, records, Path(out_dir) if out_dir is not None else Path(folder), title=title, command=command)
    return summary


def main(cfg: DictConfig) -> None:
    """``qimia report``: the tables and figures of every finished run under ``cfg.dir``, written
    to the job's folder (``hydra.run.dir=<dir>`` writes them next to the runs)."""
    from hydra.core.hydra_config import HydraConfig

    from qimia.app import output_dir

    if OmegaConf.is_missing(cfg, "dir"):
        raise ValueError("pass the folder of finished runs: qimia report dir=<folder> (e.g. dir=outputs/compare/<name>).")
    shown = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]
    arms = list(cfg.arms) if cfg.arms is not None else None
    out = output_dir()
    summary = report_folder(cfg.dir, command=" ".join(["qimia report", *shown]), out_dir=out, title=cfg.title,
                            arms=arms, reference=cfg.reference)
    print(summary.markdown())
    print(f"[report] {sum(a.seeds for a in summary.arms)} runs in {len(summary.arms)} rows; wrote {out}/results.md, "
          "results.csv, runs.csv and the figures (png, pdf)")
