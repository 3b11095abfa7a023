"""Parameter counts and parameter-matched model pairs.

Honest comparisons need the same number of parameters on both sides. ``match_parameters``
searches an integer knob (width or depth) of a model builder so that its parameter count is
as close as possible to a target, and reports both counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of distinct parameter elements (a module shared across depth counts once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@dataclass
class MatchResult:
    """A model built so that its parameter count is close to ``target``."""

    model: nn.Module
    knob: str
    value: int
    params: int
    target: int

    @property
    def relative_gap(self) -> float:
        """``(params - target) / target``."""
        return (self.params - self.target) / self.target

    def __str__(self) -> str:
        return (
            f"{self.knob}={self.value}: {self.params:,} parameters vs target {self.target:,} "
            f"({100 * self.relative_gap:+.2f}%)"
        )


def match_parameters(
    build: Callable[[int], nn.Module], target: int, *, low: int, high: int, knob: str = "width"
) -> MatchResult:
    """Find ``value`` in ``[low, high]`` whose ``build(value)`` has the parameter count nearest
    ``target``, assuming the count grows with ``value`` (bisection, ``O(log(high - low))`` builds).

    Args:
        build: maps the knob's value to a freshly built model.
        target: the parameter count to match, usually ``count_parameters(reference)``.
        low, high: inclusive search range of the knob.
        knob: name of the knob, for the report.
    """
    if low > high:
        raise ValueError(f"empty search range: low={low} > high={high}.")
    lo, hi = low, high
    while lo < hi:  # smallest value whose count reaches the target
        mid = (lo + hi) // 2
        if count_parameters(build(mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    best = None
    for value in {max(low, lo - 1), lo}:
        model = build(value)
        result = MatchResult(model, knob, value, count_parameters(model), target)
        if best is None or abs(result.params - target) < abs(best.params - target):
            best = result
    assert best is not None
    return best
