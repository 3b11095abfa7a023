"""Controllers for memory-augmented networks: feed-forward and LSTM.

Both share one interface so NTM and DNC can take either::

    state = controller.initial_state(batch_size, like=x)   # a tuple of tensors (empty for FF)
    h, state = controller(x, state)                        # x: (B, input_size), h: (B, hidden_size)

The output ``h`` is clipped to ``[-clip, clip]`` (controller output clipping, as in
deepmind/dnc) when ``clip > 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ControllerState = tuple[Tensor, ...]


class FeedForwardController(nn.Module):
    """``h = tanh(W x + b)``: no recurrent state; all memory lives in the NTM's memory."""

    def __init__(self, input_size: int, hidden_size: int, clip: float = 20.0):
        super().__init__()
        self.hidden_size, self.clip = hidden_size, clip
        self.layer = nn.Linear(input_size, hidden_size)

    def initial_state(self, batch_size: int, like: Tensor) -> ControllerState:
        return ()

    def forward(self, x: Tensor, state: ControllerState) -> tuple[Tensor, ControllerState]:
        h = torch.tanh(self.layer(x))  # (B, hidden)
        return (h.clamp(-self.clip, self.clip) if self.clip > 0 else h), state


class LSTMController(nn.Module):
    """An ``nn.LSTMCell``; state ``(h, c)`` each ``(B, hidden_size)``."""

    def __init__(self, input_size: int, hidden_size: int, clip: float = 20.0):
        super().__init__()
        self.hidden_size, self.clip = hidden_size, clip
        self.cell = nn.LSTMCell(input_size, hidden_size)

    def initial_state(self, batch_size: int, like: Tensor) -> ControllerState:
        zeros = like.new_zeros(batch_size, self.hidden_size)
        return (zeros, zeros)

    def forward(self, x: Tensor, state: ControllerState) -> tuple[Tensor, ControllerState]:
        h, c = self.cell(x, state)  # (B, hidden) each
        out = h.clamp(-self.clip, self.clip) if self.clip > 0 else h
        return out, (h, c)


CONTROLLERS = {"lstm": LSTMController, "ff": FeedForwardController}


def check_sizes(config: object, *names: str) -> None:
    """Raise ``ValueError`` naming the first of ``names`` whose value in ``config`` is below 1,
    and an unknown ``config.controller`` (when the config has one)."""
    model = type(config).__name__.removesuffix("Config")
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{model}: {name} must be >= 1, got {value}.")
    kind = getattr(config, "controller", None)
    if kind is not None and kind not in CONTROLLERS:
        raise ValueError(f"{model}: unknown controller {kind!r}; choose one of {sorted(CONTROLLERS)}.")


def make_controller(kind: str, input_size: int, hidden_size: int, clip: float = 20.0) -> nn.Module:
    """Build a controller by name (``"lstm"`` or ``"ff"``)."""
    if kind not in CONTROLLERS:
        raise ValueError(f"unknown controller {kind!r}; choose one of {sorted(CONTROLLERS)}")
    return CONTROLLERS[kind](input_size, hidden_size, clip)
