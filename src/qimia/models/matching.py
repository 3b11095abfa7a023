"""Parameter-matched pairs from the registry: ``matched_pair("transformer_lm", "qimia_transformer_lm")``.

QIMIA adds key projections and queries to the very same blocks, so a residual model with the same
hyper-parameters has fewer parameters. :func:`matched_pair` builds the candidate as asked and
widens (or narrows) the reference along its ``width_knob`` until both counts are as close as the
knob's granularity allows (:func:`qimia.params.match_parameters`), and reports both counts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import nn

from qimia.params import count_parameters, match_parameters
from qimia.models.registry import create_model, model_defaults


class MatchedPair(NamedTuple):
    """A reference model re-sized to the candidate's parameter count (trainable parameters)."""

    reference: nn.Module
    candidate: nn.Module
    knob: str
    value: int
    reference_params: int
    candidate_params: int

    @property
    def relative_gap(self) -> float:
        """``(reference_params - candidate_params) / candidate_params``."""
        return (self.reference_params - self.candidate_params) / self.candidate_params

    def __str__(self) -> str:
        return (
            f"reference {self.knob}={self.value}: {self.reference_params:,} parameters vs candidate "
            f"{self.candidate_params:,} ({100 * self.relative_gap:+.2f}%)"
        )


def matched_pair(reference: str, candidate: str, *, knob: str | None = None, **kwargs: Any) -> MatchedPair:
    """Build ``candidate`` with ``kwargs`` and ``reference`` with ``kwargs`` and its knob re-sized.

    Args:
        reference: registry name of the model to re-size (usually the residual one).
        candidate: registry name of the model kept as asked (usually the QIMIA one).
        knob: the reference's kwarg to search (default: its ``width_knob``); values of the width
            knob stay multiples of the model's ``width_multiple`` (heads, groups).
        kwargs: shared by both builders (e.g. ``depth=12``, ``vocab_size=50304``).
    """
    target_model = create_model(candidate, **kwargs)
    target = count_parameters(target_model)
    probe = create_model(reference, **kwargs)
    knob = knob or probe.width_knob
    multiple = probe.width_multiple if knob == probe.width_knob else 1
    start = kwargs.get(knob, model_defaults(reference).get(knob))
    if not isinstance(start, int):
        raise ValueError(f"{reference!r} has no integer kwarg {knob!r} to match parameters with.")

    def build(units: int) -> nn.Module:
        return create_model(reference, **{**kwargs, knob: units * multiple})

    units = max(1, start // multiple)
    result = match_parameters(build, target, low=max(1, units // 4), high=4 * units, knob=knob)
    # A frozen base (transfer heads) is the same constant on both sides: report what trains.
    return MatchedPair(
        result.model, target_model, knob, result.value * multiple,
        count_parameters(result.model, trainable_only=True), count_parameters(target_model, trainable_only=True),
    )
