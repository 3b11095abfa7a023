"""Statistics of a comparison: per-arm mean and std over seeds, and paired differences.

The arms of a comparison are paired by seed (same data order, same initial randomness of the
shared parts), so the honest question is how the *per-seed difference* to the reference is
distributed, not whether two unpaired bands overlap:

    d_s = metric(arm, seed s) - metric(reference, seed s)          over the seeds both finished
    mean d +- t_{0.975, n-1} * sd(d) / sqrt(n)                     (95% t-interval, ddof=1)
    wins  = #{s : d_s better than 0 in the metric's direction}     (e.g. "5/5 better")

Every standard deviation uses ``ddof=1``; with one seed there is none ("n/a").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; NaN for fewer than two finite values)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else float("nan"))


def t_quantile(level: float, dof: int) -> float:
    """The two-sided ``level`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))


@dataclass(frozen=True)
class Paired:
    """The paired difference ``arm - reference`` over ``n`` common seeds.

    Attributes:
        n: seeds both arms finished.
        mean: mean per-seed difference.
        low, high: its 95% t-interval (NaN for ``n < 2``).
        wins: seeds on which the arm is better (in the metric's direction).
    """

    n: int
    mean: float
    low: float
    high: float
    wins: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of zero."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def paired_difference(arm: Mapping[int, float], reference: Mapping[int, float], *, mode: str,
                      level: float = 0.95) -> Paired:
    """:class:`Paired` of ``arm[s] - reference[s]`` over the seeds ``s`` in both.

    Args:
        arm, reference: ``{seed: metric}``.
        mode: ``"max"`` (higher is better, accuracy) or ``"min"`` (lower is better, loss).
        level: coverage of the t-interval.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
    seeds = sorted(set(arm) & set(reference))
    diffs = [arm[s] - reference[s] for s in seeds if not (math.isnan(arm[s]) or math.isnan(reference[s]))]
    n = len(diffs)
    if n == 0:
        return Paired(0, float("nan"), float("nan"), float("nan"), 0)
    mean, sd = mean_std(diffs)
    half = t_quantile(level, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    wins = sum(1 for d in diffs if (d > 0 if mode == "max" else d < 0))
    return Paired(n, mean, mean - half, mean + half, wins)


def plus_minus(mean: float, std: float, digits: int = 2) -> str:
    """``"98.40 ± 0.57"``; ``"98.40 ± n/a"`` when there is no std (one seed)."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± " + ("n/a" if math.isnan(std) else f"{std:.{digits}f}")
