"""LSTM baseline for the algorithmic tasks (the NTM paper's comparison model)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from qimia.memory.ntm import check_input


@dataclass
class LSTMConfig:
    input_size: int = 9
    output_size: int = 8
    hidden_size: int = 119
    num_layers: int = 1


class LSTMBaseline(nn.Module):
    """Stacked ``nn.LSTM`` and a linear read-out: ``y_t = W h_t``."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.input_size, config.hidden_size, config.num_layers, batch_first=True)
        self.output = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor] | None = None, trace: bool = False):
        """Args: inputs ``(B, T, input_size)``. Returns logits ``(B, T, output_size)`` and ``(h, c)``."""
        check_input(inputs, self.config.input_size)
        h, state = self.lstm(inputs, state)  # (B, T, hidden)
        logits = self.output(h)
        return (logits, state, []) if trace else (logits, state)
