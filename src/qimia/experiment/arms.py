"""The arms of a comparison and their parameter matching.

An *arm* is a name plus model kwargs that differ from the experiment's model config: by default
one arm per depth mixer (``compare.mixers``), or explicit ``compare.variants`` (a QIMIA heads
sweep, layer vs component, ...). Every arm but the reference has its width knob searched with
:func:`qimia.params.match_parameters` so its parameter count matches the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """

    name: str
    overrides: dict[str, Any]
    params: int = 0
    knob: str = ""
    knob_value: int = 0
    target: int = 0

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
        from qimia.layers import MIXERS

        unknown = sorted(set(cfg.compare.mixers) - set(MIXERS))
        if unknown:
            raise ValueError(f"compare.mixers has unknown mixers {unknown}; choose among {list(MIXERS)}.")
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


def match_arms(model_name: str, base_kwargs: dict[str, Any], arms: list[Arm], reference: Arm, *, match: bool) -> None:
    """Fill each arm's ``params`` (and, if ``match``, its width knob) in place.

    The reference keeps its configured width; every other arm's knob is searched over
    ``[value / 2, 2 value]`` in steps of the model's ``width_multiple``.
    """
    from qimia.models import create_model, model_defaults

    def build(overrides: dict[str, Any]):
        return create_model(model_name, **{**base_kwargs, **overrides})

    probe = build(reference.overrides)
    knob = probe.width_knob
    target = count_parameters(probe)
    for arm in arms:
        kwargs = {**base_kwargs, **arm.overrides}
        value = kwargs.get(knob, model_defaults(model_name).get(knob))
        model = build(arm.overrides)
        multiple = int(getattr(model, "width_multiple", 1))
        if match and arm is not reference:
            unit = max(1, value // multiple)

            def build_units(units: int, arm: Arm = arm, multiple: int = multiple):
                try:
                    return build({**arm.overrides, knob: units * multiple})
                except (ValueError, TypeError) as err:
                    raise ValueError(
                        f"parameter matching built {model_name} arm {arm.name!r} with {knob}={units * multiple} "
                        f"and it failed: {err}. Set compare.match_params=false or change the arm."
                    ) from err

            result = match_parameters(build_units, target, low=max(1, unit // 2), high=2 * unit, knob=knob)
            value = result.value * multiple
            arm.overrides = {**arm.overrides, knob: value}
            arm.params = result.params
        else:
            arm.params = count_parameters(model)
        arm.knob, arm.knob_value, arm.target = knob, int(value), target
