"""Closed forms of the SGD coefficient recursion (the equations in the module docstring)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qimia.dual.errors import UnsupportedOptimizerError
from qimia.dual.optim_coeffs import check_optimizer, param_coefficients


def _steps(T, **group):
    g = {"lr": 0.1, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0, "maximize": False}
    g.update(group)
    return [{"step": t, "groups": [dict(g)], "params": {"w": [0, 1.0]}} for t in range(T)]


def test_weight_decay_scales_initial_weights_and_earlier_slots():
    T, lr, wd = 12, 0.1, 0.3
    co = param_coefficients(_steps(T, lr=lr, weight_decay=wd), "w")
    assert co.a0 == pytest.approx((1 - lr * wd) ** T)
    expected = [-lr * (1 - lr * wd) ** (T - 1 - t) for t in range(T)]
    np.testing.assert_allclose(co.alpha, expected, rtol=1e-12)


def test_momentum_is_a_truncated_geometric_series():
    T, lr, mu = 10, 0.05, 0.9
    co = param_coefficients(_steps(T, lr=lr, momentum=mu), "w")
    assert co.a0 == 1.0
    np.testing.assert_allclose(co.alpha, [-lr * (1 - mu ** (T - t)) / (1 - mu) for t in range(T)], rtol=1e-12)


def test_clipping_scale_and_skipped_steps():
    steps = _steps(4)
    steps[1]["params"]["w"] = [0, 0.25]          # clipped step
    steps[2]["params"]["w"] = None               # no gradient: SGD skips the parameter
    co = param_coefficients(steps, "w")
    np.testing.assert_allclose(co.alpha, [-0.1, -0.025, 0.0, -0.1])


def test_refusal_names_keys_only_mode():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(UnsupportedOptimizerError, match="keys_only=True"):
        check_optimizer(torch.optim.Adam(p), keys_only=False)
    check_optimizer(torch.optim.Adam(p), keys_only=True)
    check_optimizer(torch.optim.SGD(p, lr=0.1), keys_only=False)
