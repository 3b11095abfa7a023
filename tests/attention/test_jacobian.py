from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from qimia.attention import jacobian
from qimia.attention.jacobian import input_jacobian, sensitivity_map, sequential_jacobian


def test_linear_model_jacobian_is_its_weight_exactly():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    for method in ("vmap", "loop"):
        jac = input_jacobian(lin, x, method)
        assert jac.shape == (4, 3, 5)
        assert torch.equal(jac, lin.weight.detach().expand(4, 3, 5))


def test_sensitivity_map_selects_target_row():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(2, 1, 4, 4)
    target = torch.tensor([2, 0])
    sal = sensitivity_map(model, x, target)
    assert sal.shape == (2, 1, 4, 4)
    for b in range(2):
        xb = x[b : b + 1].clone().requires_grad_()
        g = torch.autograd.grad(model(xb)[0, target[b]], xb)[0]
        torch.testing.assert_close(sal[b], g[0].abs())


class TinyRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.out = nn.RNN(2, 4, batch_first=True), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.rnn(x)[0])


def test_sequential_jacobian_matches_finite_differences_and_is_causal():
    torch.manual_seed(0)
    model = TinyRNN().double()
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    jac = input_jacobian(model, x, "loop")  # (B, T, O, T, D); nn.RNN cannot always be vmapped
    eps = 1e-6
    t_in, d = 1, 1
    dx = torch.zeros_like(x)
    dx[:, t_in, d] = eps
    fd = (model(x + dx) - model(x - dx)) / (2 * eps)  # (B, T, O)
    torch.testing.assert_close(jac[:, :, :, t_in, d], fd, atol=1e-8, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "vmap failed ... using one backward pass per output"
        heat = sequential_jacobian(model, x)
    assert heat.shape == (2, 5, 5)
    assert torch.all(heat.triu(1) == 0)  # y_t does not depend on future inputs
    assert torch.all(heat.diagonal(dim1=1, dim2=2) > 0)


class NotVmappable(nn.Module):
    """Data-dependent Python control flow: vmap cannot trace it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        scale = 2.0 if bool(x.abs().sum() > 0) else 1.0
        return self.lin(x) * scale


def test_falls_back_when_vmap_fails():
    torch.manual_seed(0)
    model, x = NotVmappable(), torch.randn(3, 3)
    with pytest.raises(Exception):
        input_jacobian(model, x, "vmap")
    with pytest.warns(UserWarning, match="vmap failed"):
        jac = input_jacobian(model, x)
    torch.testing.assert_close(jac, (2 * model.lin.weight.detach()).expand(3, 2, 3))


def test_bad_method():
    with pytest.raises(ValueError, match="unknown method"):
        input_jacobian(nn.Linear(2, 2), torch.randn(1, 2), "magic")


class TinyLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.out = nn.LSTM(2, 4, batch_first=True), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.lstm(x)[0])


def test_lstm_batching_rule_fallback_is_logged_once_and_exact(caplog, monkeypatch):
    monkeypatch.setattr(jacobian, "_LOGGED_OPS", set())  # "once per process": start from a fresh process state
    torch.manual_seed(0)
    model, x = TinyLSTM(), torch.randn(2, 4, 2)  # float32: the CPU LSTM then runs aten::mkldnn_rnn_layer
    with caplog.at_level(logging.WARNING, logger="qimia.attention.jacobian"), warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own batching-rule warning must not leak out as a warning
        jac = input_jacobian(model, x, "vmap")
        input_jacobian(model, x, "auto")
    logged = [r for r in caplog.records if "no batching rule" in r.getMessage()]
    assert len(logged) == 1 and "aten::mkldnn_rnn_layer" in logged[0].getMessage()
    assert logged[0].levelno == logging.WARNING
    torch.testing.assert_close(jac, input_jacobian(model, x, "loop"), atol=1e-6, rtol=1e-5)


def test_unrelated_warnings_inside_vmap_are_passed_on():
    class Warns(nn.Module):
        def forward(self, x):
            warnings.warn("user-level warning from the model", RuntimeWarning)
            return x * 2

    with pytest.warns(RuntimeWarning, match="user-level warning"):
        input_jacobian(Warns(), torch.randn(2, 3), "vmap")
