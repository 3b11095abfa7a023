"""``qimia memory jacobian``: train a small model, then plot its implicit attention.

* ``kind=classifier``: an MLP on sklearn's 8x8 digits (offline); saves the class sensitivity
  maps ``|d f_c / d x|`` of test images (``sensitivity.png``).
* ``kind=rnn``: an LSTM trained to output its input from ``lag`` steps earlier; saves the
  sequential Jacobian ``||d y_t / d x_t'||`` as a ``T x T`` heat map (``sequential_jacobian.png``),
  where the learned delay shows as a band ``lag`` below the diagonal. ``seq_len`` and ``lag``
  belong to this kind only (defaults 20 and 5); giving them with ``kind=classifier`` is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qimia.attention.jacobian import plot_heatmap, sensitivity_map, sequential_jacobian


RNN_DEFAULTS = {"seq_len": 20, "lag": 5}


@dataclass
class JacobianConfig:
    kind: str = "rnn"  # classifier | rnn
    steps: int = 600
    seq_len: int | None = None  # rnn only (default 20); an error for kind=classifier
    lag: int | None = None  # rnn only (default 5): the delay the LSTM learns
    hidden: int = 32
    seed: int = 0
    out: str = "runs/memory/jacobian"

    def __post_init__(self) -> None:
        if self.kind not in ("classifier", "rnn"):
            raise ValueError(f"unknown kind {self.kind!r}; choose classifier or rnn")
        if self.steps < 1 or self.hidden < 1:
            raise ValueError(f"steps and hidden must be >= 1, got steps={self.steps}, hidden={self.hidden}")
        if self.kind == "classifier":
            given = [k for k in RNN_DEFAULTS if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to kind=rnn "
                                 "(the classifier is an MLP on 8x8 digits); drop them or pass kind=rnn")
            return
        for key, default in RNN_DEFAULTS.items():
            if getattr(self, key) is None:
                setattr(self, key, default)
        if not 0 <= self.lag < self.seq_len:
            raise ValueError(f"need 0 <= lag < seq_len, got lag={self.lag}, seq_len={self.seq_len}")


class DelayRNN(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.lstm, self.out = nn.LSTM(1, hidden, batch_first=True), nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(x)[0])  # (B, T, 1)


def run_jacobian(cfg: JacobianConfig) -> dict:
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "classifier":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        y = torch.tensor(d.target)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, cfg.hidden * 2), nn.ReLU(), nn.Linear(cfg.hidden * 2, 10))
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        for _ in range(cfg.steps):
            idx = torch.randint(0, 1500, (64,))
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        acc = (model(x[1500:]).argmax(-1) == y[1500:]).float().mean().item()
        sal = sensitivity_map(model, x[1500:1506])  # (6, 1, 8, 8)
        grid = torch.cat([torch.cat([x[1500 + i, 0], sal[i, 0] / sal[i].max()], 0) for i in range(6)], 1)
        plot_heatmap(grid, str(out / "sensitivity.png"), "digits (top) and |d f_c / d x| (bottom)")
        result = {"kind": "classifier", "test_accuracy": acc, "plot": str(out / "sensitivity.png")}
    else:
        model = DelayRNN(cfg.hidden)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(cfg.steps):
            x = torch.randn(32, cfg.seq_len, 1)
            target = F.pad(x, (0, 0, cfg.lag, 0))[:, : cfg.seq_len]  # y_t = x_{t - lag}
            loss = F.mse_loss(model(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        heat = sequential_jacobian(model, torch.randn(8, cfg.seq_len, 1)).mean(0)  # (T, T)
        plot_heatmap(heat, str(out / "sequential_jacobian.png"), f"||d y_t / d x_t'|| (delay {cfg.lag})",
                     "input step t'", "output step t")
        t = cfg.seq_len - 1
        result = {"kind": "rnn", "final_mse": loss.item(), "argmax_input_for_last_output": int(heat[t].argmax()),
                  "expected": t - cfg.lag, "plot": str(out / "sequential_jacobian.png")}
    (out / f"jacobian_{cfg.kind}.json").write_text(json.dumps(result, indent=1))
    return result
