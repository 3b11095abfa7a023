"""The arms of a comparison and their parameter matching.

An *arm* is a name plus model kwargs that differ from the experiment's model config: by default
one arm per depth mixer (``compare.mixers``), or explicit ``compare.variants`` (a QIMIA heads
sweep, layer vs component, ...). Every arm has its width knob searched with :func:`qimia.params.match_parameters` so that all
parameter counts agree within 1% (:func:`match_arms`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from qimia.params import count_parameters, match_parameters


@dataclass
class Arm:
    """One side of a comparison.

    Attributes:
        name: label in tables and plots.
        overrides: model kwargs on top of the experiment's (``mixer``, matched width, ...).
        params: parameter count after matching.
        knob, knob_value: the width knob and its (matched) value.
        target: the reference's parameter count.
        within_tolerance: whether ``params`` is within the matching tolerance of ``target``.
        matched_by: the model's fine knob and its value, when matching moved it (also in ``overrides``).
    """

    name: str
    overrides: dict[str, Any]
    params: int = 0
    knob: str = ""
    knob_value: int = 0
    target: int = 0
    within_tolerance: bool = True
    matched_by: dict[str, Any] = field(default_factory=dict)

    @property
    def relative_gap(self) -> float:
        return (self.params - self.target) / self.target if self.target else 0.0


def arms_from_config(cfg: DictConfig) -> list[Arm]:
    """``compare.variants`` (``{name: {kwarg: value}}``) if set, else one arm per ``compare.mixers``."""
    variants = cfg.compare.variants
    if variants:
        resolved = OmegaConf.to_container(variants, resolve=True)
        if not isinstance(resolved, dict) or not all(isinstance(v, dict) for v in resolved.values()):
            raise ValueError("compare.variants must map arm names to dicts of model kwargs, e.g. {h2: {qimia_heads: 2}}.")
        arms = [Arm(str(name), dict(kw)) for name, kw in resolved.items()]
    else:
        from qimia.models.mixers import mixer_names

        unknown = sorted(set(cfg.compare.mixers) - set(mixer_names()))
        if unknown:
            raise ValueError(f"compare.mixers has unknown mixers {unknown}; choose among {mixer_names()}.")
        arms = [Arm(str(m), {"mixer": str(m)}) for m in cfg.compare.mixers]
    if len({a.name for a in arms}) != len(arms) or not arms:
        raise ValueError(f"compare needs at least one arm with distinct names, got {[a.name for a in arms]}.")
    return arms


def reference_arm(cfg: DictConfig, arms: list[Arm]) -> Arm:
    name = cfg.compare.reference or arms[0].name
    for arm in arms:
        if arm.name == name:
            return arm
    raise ValueError(f"compare.reference={name!r} is not an arm; arms: {[a.name for a in arms]}.")


TOLERANCE = 0.01  # parameter counts within +-1% of the reference count
REFERENCE_STEPS = 4  # how many width multiples the reference may move either way to get there


def match_arms(
    model_name: str, base_kwargs: dict[str, Any], arms: list[Arm], reference: Arm, *, match: bool,
    tolerance: float = TOLERANCE,
) -> None:
    """Fill each arm's ``params`` (and, if ``match``, its width knob) in place.

    Two-sided matching: every other arm's knob is bisected (:func:`qimia.params.match_parameters`,
    over ``[value / 2, 2 value]`` in steps of the model's ``width_multiple``) to the reference's
    count; when a coarse width multiple keeps some arm outside ``tolerance``, the reference's own
    width moves too, up to ``REFERENCE_STEPS`` multiples either way, nearest first, and the first
    reference width at which every arm is within ``tolerance`` is kept. Only if no width does, the
    same search runs again with each missing arm's ``fine_knob`` (if the model declares one and the
    arm does not set it: ``mlp_ratio``, ``key_dim``) bisected within a factor of two; failing that,
    the plan with the smallest worst gap is kept and :attr:`Arm.within_tolerance` says so.
    """
    from qimia.models import create_model, model_defaults

    def build(arm: Arm, overrides: dict[str, Any]):
        try:
            return create_model(model_name, **{**base_kwargs, **arm.overrides, **overrides})
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"parameter matching built {model_name} arm {arm.name!r} with {overrides} and it failed: {err}. "
                "Set compare.match_params=false or change the arm."
            ) from err

    probe = build(reference, {})
    knob = probe.width_knob
    configured = {a.name: int({**base_kwargs, **a.overrides}.get(knob, model_defaults(model_name).get(knob))) for a in arms}
    multiple = {a.name: int(getattr(build(a, {}), "width_multiple", 1)) for a in arms}
    if not match:
        target = count_parameters(probe)
        for arm in arms:
            arm.params, arm.knob, arm.knob_value, arm.target = count_parameters(build(arm, {})), knob, configured[arm.name], target
            arm.within_tolerance = abs(arm.relative_gap) <= tolerance
        return

    fine = getattr(probe, "fine_knob", None)
    defaults = {**model_defaults(model_name), **base_kwargs}

    def matched_at(ref_value: int, use_fine: bool) -> dict[str, tuple[dict[str, Any], int]]:
        """``{arm: (its overrides, params)}`` with the reference's knob at ``ref_value``: each
        other arm's width bisected, then (``use_fine``) its fine knob if the width alone misses
        ``tolerance``."""
        ref_overrides = {**reference.overrides, knob: ref_value}
        target = count_parameters(build(reference, {knob: ref_value}))
        out = {reference.name: (ref_overrides, target)}
        for arm in arms:
            if arm is reference:
                continue
            m, unit = multiple[arm.name], max(1, configured[arm.name] // multiple[arm.name])
            result = match_parameters(lambda units, arm=arm, m=m: build(arm, {knob: units * m}), target,
                                      low=max(1, unit // 2), high=2 * unit, knob=knob)
            overrides, params = {**arm.overrides, knob: result.value * m}, result.params
            if use_fine and fine is not None and fine not in arm.overrides and abs(params - target) > tolerance * target:
                overrides, params = _match_fine(lambda o, arm=arm, w=overrides: build(arm, {**w, **o}), overrides,
                                                fine, target, defaults)
            out[arm.name] = (overrides, params)
        return out

    def worst_gap(plan: dict[str, tuple[dict[str, Any], int]]) -> float:
        target = plan[reference.name][1]
        return max(abs(params - target) / target for _, params in plan.values())

    step, base = multiple[reference.name], configured[reference.name]
    candidates = [base + k * step for k in sorted(range(-REFERENCE_STEPS, REFERENCE_STEPS + 1), key=abs) if base + k * step > 0]
    best = None
    # widths alone first, then with the fine knob; nearest the configured width first; the first
    # plan within tolerance wins, else the one with the smallest worst gap
    for use_fine, value in [(False, v) for v in candidates] + [(True, v) for v in candidates] * (fine is not None):
        plan = matched_at(value, use_fine)
        if best is None or worst_gap(plan) < worst_gap(best):
            best = plan
        if worst_gap(plan) <= tolerance:
            best = plan
            break
    assert best is not None
    target = best[reference.name][1]
    for arm in arms:
        overrides, params = best[arm.name]
        value = int(overrides[knob])
        arm.matched_by = {fine: overrides[fine]} if fine in overrides and fine not in arm.overrides else {}
        arm.overrides = {k: v for k, v in overrides.items() if k != knob or v != configured[arm.name]}
        arm.params, arm.knob, arm.knob_value, arm.target = params, knob, value, target
        arm.within_tolerance = abs(arm.relative_gap) <= tolerance


def _match_fine(build: Any, overrides: dict[str, Any], fine: str, target: int, defaults: dict[str, Any],
                iterations: int = 40) -> tuple[dict[str, Any], int]:
    """Bisect a model's ``fine_knob`` to the count nearest ``target``: a float (``mlp_ratio``:
    hidden units in steps of one) or an int (``key_dim``), over ``[value / 2, 2 value]``: a
    comparison never moves a model's hyper-parameter by more than a factor of two to match counts.
    Returns the overrides and the count (unchanged if the knob is unset)."""
    start = overrides.get(fine, defaults.get(fine))
    best = (overrides, count_parameters(build({})))
    if start is None:
        return best
    integer = isinstance(start, int) and not isinstance(start, bool)
    lo, hi = (max(1, start // 2), 2 * start) if integer else (start / 2, start * 2)
    for _ in range(iterations):
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        params = count_parameters(build({fine: mid}))
        if abs(params - target) < abs(best[1] - target):
            best = ({**overrides, fine: mid}, params)
        if integer and hi - lo <= 1:
            break
        if params < target:
            lo = mid + 1 if integer else mid
        else:
            hi = mid
    return best
