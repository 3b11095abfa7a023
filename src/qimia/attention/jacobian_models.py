"""The small networks whose implicit attention ``qimia memory jacobian`` draws.

* :class:`DelayRNN`: an LSTM read out at every step, ``(B, T, 1) -> (B, T, 1)``; trained to output
  its input from ``lag`` steps earlier, its sequential Jacobian is a band ``lag`` below the diagonal.
* :class:`MLPClassifier`: ``Flatten -> Linear -> ReLU -> Linear``, images ``(B, C, H, W)`` to class
  logits ``(B, num_classes)``; its class sensitivity maps ``|d f_c / d x|`` are saliency maps.
"""

from __future__ import annotations

from torch import Tensor, nn


class DelayRNN(nn.Module):
    """``y_t = W h_t + b`` with ``h_t = LSTM(x_1..x_t)``.

    Args:
        hidden: LSTM width; input_size, output_size: features per step.
    """

    def __init__(self, hidden: int = 32, input_size: int = 1, output_size: int = 1) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}.")
        self.lstm, self.out = nn.LSTM(input_size, hidden, batch_first=True), nn.Linear(hidden, output_size)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(B, T, input_size)``. Returns ``(B, T, output_size)``."""
        return self.out(self.lstm(x)[0])


class MLPClassifier(nn.Sequential):
    """One hidden ReLU layer over the flattened image.

    Args:
        in_features: ``C * H * W``; hidden: hidden width; num_classes: outputs.
    """

    def __init__(self, in_features: int = 64, hidden: int = 64, num_classes: int = 10) -> None:
        if min(in_features, hidden, num_classes) < 1:
            raise ValueError(f"sizes must be >= 1, got in_features={in_features}, hidden={hidden}, "
                             f"num_classes={num_classes}.")
        super().__init__(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
