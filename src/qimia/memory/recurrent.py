"""What every classic memory model shares: the input check and the loop over time.

A :class:`RecurrentMemory` defines ``initial_state(batch_size, like)`` and ``step(x_t, state)``;
``forward`` unrolls it over a ``(B, T, input_size)`` sequence (the loop runs over time only,
never over the batch) and, with ``trace=True``, also returns every step's state, which
:meth:`RecurrentMemory.weightings` turns into the read and write weightings over time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn


def check_input(inputs: Tensor, input_size: int, model: str) -> None:
    """Raise a clear ``ValueError`` unless ``inputs`` is ``(B, T, input_size)`` with ``T >= 1``."""
    if inputs.dim() != 3 or inputs.shape[-1] != input_size:
        raise ValueError(f"{model}: expected inputs of shape (B, T, {input_size}), got {tuple(inputs.shape)}.")
    if inputs.shape[1] == 0:
        raise ValueError(f"{model}: got a sequence of length 0 (inputs of shape {tuple(inputs.shape)}); "
                         "a recurrent model needs at least one time step: pass T >= 1.")


class RecurrentMemory(nn.Module, ABC):
    """Base of the step-wise memory models (NTM, DNC). Subclasses set ``self.config`` (with
    ``input_size``) and implement ``initial_state``, ``step`` and ``weightings``."""

    config: Any

    @abstractmethod
    def initial_state(self, batch_size: int, like: Tensor) -> Any:
        """The state before the first step, for ``batch_size`` sequences on ``like``'s device and dtype."""

    @abstractmethod
    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One time step: ``x (B, input_size)`` -> logits ``(B, output_size)`` and the new state."""

    @abstractmethod
    def weightings(self, states: list[Any]) -> dict[str, Tensor]:
        """``{panel title: (N, T) weighting of sequence 0}`` from a trace of states."""

    def forward(self, inputs: Tensor, state: Any = None, trace: bool = False):
        """Run over a sequence.

        Args:
            inputs: ``(B, T, input_size)``, ``T >= 1``.
            state: optional initial state (default: :meth:`initial_state`).
            trace: also return the list of the ``T`` states (for weighting plots).

        Returns:
            logits ``(B, T, output_size)`` and the final state (plus the list of states if ``trace``).
        """
        check_input(inputs, self.config.input_size, type(self).__name__)
        state = self.initial_state(inputs.shape[0], inputs) if state is None else state
        outs, states = [], []
        for t in range(inputs.shape[1]):
            y, state = self.step(inputs[:, t], state)
            outs.append(y)
            if trace:
                states.append(state)
        logits = torch.stack(outs, dim=1)  # (B, T, O)
        return (logits, state, states) if trace else (logits, state)
