"""What every registry model exposes besides ``forward``: ``task``, ``width_knob``,
``width_multiple``, ``depth_attention(x)`` and ``example_input(batch_size)``."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from qimia.models.inspection import depth_attention

TASKS = ("classification", "language_modeling", "denoising")


class RegistryModel(nn.Module):
    """Base of the registry's models.

    Attributes:
        task: ``"classification"``, ``"language_modeling"`` or ``"denoising"``.
        width_knob: the constructor kwarg that scales the parameter count (for
            :func:`qimia.params.match_parameters`).
        width_multiple: values of the width knob must be multiples of this (heads, groups).
    """

    task: ClassVar[str]
    width_knob: ClassVar[str]
    width_multiple: int = 1

    def depth_attention(self, *inputs: Tensor) -> dict[str, Tensor]:
        """``{container name: (R, S)}`` depth attention on ``inputs`` (``{}`` for residual models)."""
        return depth_attention(self, *inputs)

    def example_input(self, batch_size: int = 2) -> Tensor:
        """A random input of the right shape, dtype and device for ``forward``."""
        raise NotImplementedError
