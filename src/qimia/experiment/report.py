"""Tables and plots of a comparison: ``results.md``, ``results.csv``, ``runs.csv``,
``learning_curves.png`` and ``depth_attention.png``."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class ArmSummary:
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


@dataclass
class Summary:
    """Per-arm mean and std (over seeds) of the headline test metric and of throughput."""

    metric: str
    mode: str
    unit: str
    reference: str
    arms: list[ArmSummary]

    def markdown(self) -> str:
        better = "higher is better" if self.mode == "max" else "lower is better"
        scale = 100.0 if self.metric == "acc" else 1.0
        label = f"test {self.metric}{' (%)' if scale == 100 else ''}"
        lines = [
            f"| arm | width knob | parameters | vs {self.reference} | {label} ({better}) | "
            f"throughput ({self.unit}/s) | throughput / {self.reference} (per seed) | seeds |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for a in self.arms:
            lines.append(
                f"| {a.name} | {a.knob}={a.knob_value} | {a.params:,} | {100 * a.param_gap:+.2f}% | "
                f"{scale * a.metric_mean:.{2 if scale == 100 else 4}f} ± {scale * a.metric_std:.{2 if scale == 100 else 4}f} | "
                f"{a.throughput_mean:,.0f} ± {a.throughput_std:,.0f} | {a.throughput_ratio:.2f} ± {a.throughput_ratio_std:.2f} | "
                f"{a.seeds} |"
            )
        return "\n".join(lines)


def summarize(records: list[dict[str, Any]], arm_names: list[str], reference: str) -> Summary:
    if not records:
        raise ValueError("no finished runs to summarise.")
    first = records[0]
    metric, mode, unit = first["monitor"], first["monitor_mode"], first["unit"]
    arm_names = [name for name in arm_names if any(r["arm"] == name for r in records)]
    if reference not in arm_names:
        raise ValueError(f"no finished run of the reference arm {reference!r} yet.")
    by_arm = {name: [r for r in records if r["arm"] == name] for name in arm_names}
    ref_throughput = {r["seed"]: r["throughput"] for r in by_arm[reference]}
    arms = []
    for name in arm_names:
        runs = by_arm[name]
        if not runs:
            continue
        m_mean, m_std = _mean_std([r["test"].get(f"test/{metric}", float("nan")) for r in runs])
        t_mean, t_std = _mean_std([r["throughput"] for r in runs])
        # ratio to the reference run of the same seed (run back to back): robust to a shared machine's load
        r_mean, r_std = _mean_std([r["throughput"] / ref_throughput[r["seed"]] for r in runs if r["seed"] in ref_throughput])
        target = runs[0]["target_params"]
        arms.append(ArmSummary(
            name, runs[0]["params"], (runs[0]["params"] - target) / target, runs[0]["knob"], runs[0]["knob_value"],
            m_mean, m_std, t_mean, t_std, r_mean, r_std, len(runs),
        ))
    return Summary(metric, mode, unit, reference, arms)


def write_report(summary: Summary, records: list[dict[str, Any]], out_dir: Path, *, title: str, command: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = [
        f"# qimia compare: {title}",
        "",
        f"Command: `{command}`",
        "",
        f"Test {summary.metric} of the final weights, mean ± std over seeds; parameter counts matched to "
        f"`{summary.reference}` through each model's width knob; training throughput ({summary.unit}/s, "
        "forward + backward + update) measured in the same process, arms interleaved per seed; the ratio "
        "is taken per seed against the reference run of the same seed (run back to back), then averaged.",
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
                         "throughput_mean", "throughput_std", "unit", "throughput_ratio", "throughput_ratio_std", "seeds"])
        for a in summary.arms:
            writer.writerow([a.name, a.knob, a.knob_value, a.params, f"{a.param_gap:.6f}", f"test/{summary.metric}",
                             f"{a.metric_mean:.6f}", f"{a.metric_std:.6f}", f"{a.throughput_mean:.2f}",
                             f"{a.throughput_std:.2f}", summary.unit, f"{a.throughput_ratio:.4f}", f"{a.throughput_ratio_std:.4f}", a.seeds])
    with open(out_dir / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "seed", "params", f"test/{summary.metric}", "throughput"])
        for r in records:
            writer.writerow([r["arm"], r["seed"], r["params"], r["test"].get(f"test/{summary.metric}"), f"{r['throughput']:.2f}"])
    plot_learning_curves(records, [a.name for a in summary.arms], summary.metric, out_dir / "learning_curves.png")
    plot_depth_attention(records, out_dir / "depth_attention.png")


def plot_learning_curves(records: list[dict[str, Any]], arm_names: list[str], metric: str, path: Path) -> None:
    """Validation ``metric`` and training loss against the step: mean over seeds, band = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(11, 4))
    for name in arm_names:
        runs = [r for r in records if r["arm"] == name]
        for ax, key, series in ((ax_val, f"val/{metric}", "val"), (ax_train, "loss", "train")):
            curves = [[(p["step"], p[key]) for p in r["history"].get(series, []) if key in p] for r in runs]
            length = min((len(c) for c in curves), default=0)
            if length == 0:
                continue
            steps = np.array([s for s, _ in curves[0][:length]])
            values = np.array([[v for _, v in c[:length]] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, label=name, marker="o" if series == "val" else None, markersize=3)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax_val.set(xlabel="step", ylabel=f"validation {metric}", title="validation")
    ax_train.set(xlabel="step", ylabel="training loss", title="training", yscale="log")
    for ax in (ax_val, ax_train):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_depth_attention(records: list[dict[str, Any]], path: Path) -> None:
    """Heatmaps of each arm's depth attention (seed 0): row = reader (block, then readout),
    column = slot it reads (0 = the stage input)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(r["arm"], name, np.array(m)) for r in records if r["seed"] == 0 for name, m in r["attention"].items()]
    if not panels:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no arm records depth attention (residual models have none)", ha="center", va="center")
        fig.savefig(path, dpi=120)
        plt.close(fig)
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
            ax.set_title(f"{arm}: {name}", fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
