"""LSTM baseline for the algorithmic tasks (the NTM paper's comparison model)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from qimia.memory.controllers import check_sizes
from qimia.memory.recurrent import check_input
from qimia.memory.registry import register_memory_model


@dataclass
class LSTMConfig:
    """Hyper-parameters of an :class:`LSTMBaseline` (hidden 119 matches the default NTM's
    parameter count on copy: 62.8k vs 62.7k)."""

    input_size: int = 9
    output_size: int = 8
    hidden_size: int = 119
    num_layers: int = 1

    def __post_init__(self) -> None:
        check_sizes(self, "input_size", "output_size", "hidden_size", "num_layers")


@register_memory_model("lstm", LSTMConfig)
class LSTMBaseline(nn.Module):
    """Stacked ``nn.LSTM`` and a linear read-out: ``y_t = W h_t``."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.input_size, config.hidden_size, config.num_layers, batch_first=True)
        self.output = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor] | None = None, trace: bool = False):
        """Args: inputs ``(B, T, input_size)``, ``T >= 1``. Returns logits ``(B, T, output_size)`` and
        ``(h, c)`` (and an empty trace: the LSTM has no addressable memory)."""
        check_input(inputs, self.config.input_size, "LSTMBaseline")
        h, state = self.lstm(inputs, state)  # (B, T, hidden)
        logits = self.output(h)
        return (logits, state, []) if trace else (logits, state)

    def weightings(self, states: list) -> dict[str, Tensor]:
        """No memory, no weightings."""
        return {}
