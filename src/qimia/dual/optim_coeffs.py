r"""Exact per-slot coefficients of SGD (momentum, dampening, Nesterov, weight decay, clipping, schedules).

The dual form of Irie, Csordás, Schmidhuber 2022 ("The Dual Form of Neural Networks Revisited",
ICML 2022) is stated for plain SGD; these coefficients generalise it to every PyTorch SGD option.

Sign convention: values are ``e_t = dL/dy_t`` (what autograd computes), so for plain
descent the coefficients are negative (``c_t = -eta_t``).

For one parameter ``W`` the recorded gradient of step ``t`` is ``G_t = sum_{slots i of t} e_i x_i^T``
(all uses, all examples, loss-reduction factors included). PyTorch's SGD does, per step::

    d_t   = s_t G_t + lambda_t W_t                  # s_t: clipping factor (x -1 if maximize)
    buf_t = d_t                      (first step)   # momentum buffer
          = mu buf_{t-1} + (1 - tau) d_t (later)    # mu: momentum, tau: dampening
    d_t  <- d_t + mu buf_t  (Nesterov)  or  buf_t
    W_{t+1} = W_t - eta_t d_t

Every quantity is a linear combination of ``W_0`` and ``G_0..G_{t}`` with scalar
coefficients that depend only on the optimizer scalars, so after ``T`` steps::

    W_T = a_0 W_0 + sum_t alpha_t G_t = a_0 W_0 + sum_i c_i e_i x_i^T,      c_i = alpha_{step(i)}

and therefore ``W_T x = a_0 W_0 x + sum_i c_i e_i (x_i . x)``: key-value attention over
all training slots. Weight decay makes ``a_0 != 1`` (the initial weights shrink) and
shrinks earlier slots; momentum gives each step's gradient a geometric tail. We track the
coefficient vectors exactly (float64) with the same recursion, O(T) per step.

Adam, RMSprop, Adagrad, ... precondition each coordinate differently: ``W_T - W_0`` is
then not a sum of scalar-weighted outer products ``e_i x_i^T``, so they are refused
(:class:`UnsupportedOptimizerError`) unless keys-only mode is requested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qimia.dual.errors import UnsupportedOptimizerError

GROUP_KEYS = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize")


def check_optimizer(optimizer: torch.optim.Optimizer, keys_only: bool) -> None:
    """Refuse optimizers without an exact dual form (anything but ``torch.optim.SGD``)."""
    if keys_only or type(optimizer) is torch.optim.SGD:
        return
    raise UnsupportedOptimizerError(
        f"{type(optimizer).__name__} has no exact key-value (dual) form: it rescales each coordinate "
        "of the gradient, so W_T - W_0 is not a sum of scalar-weighted outer products e_t x_t^T. "
        "Use torch.optim.SGD (momentum, weight decay, clipping and LR schedules are exact), or pass "
        "keys_only=True to record inputs only and score by |x_t . x| (an APPROXIMATE analysis).")


def group_scalars(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The optimizer scalars of every param group at this step (LR as set by any scheduler)."""
    out = []
    for group in optimizer.param_groups:
        lr = group["lr"]
        out.append({k: (float(lr.item() if torch.is_tensor(lr) else lr) if k == "lr" else group.get(k, 0))
                    for k in GROUP_KEYS})
    return out


@dataclass(frozen=True)
class ParamCoefficients:
    """``W_T = a0 * W_0 + sum_t alpha[t] * G_t`` for one parameter.

    Attributes:
        a0: coefficient of the initial value ``W_0`` (1 without weight decay).
        alpha: ``(T,)`` float64 coefficient of step ``t``'s recorded gradient ``G_t``
            (clipping factor folded in; 0 for steps where the parameter got no gradient).
    """

    a0: float
    alpha: np.ndarray


def param_coefficients(steps: Sequence[dict[str, Any]], param: str) -> ParamCoefficients:
    """Run the SGD recursion on coefficients for parameter ``param`` over the recorded ``steps``."""
    T = len(steps)
    a, alpha = 1.0, np.zeros(T)         # W_t = a W_0 + alpha . G
    b, beta = 0.0, np.zeros(T)          # buf_t = b W_0 + beta . G
    has_buf = False
    for t, rec in enumerate(steps):
        entry = rec["params"].get(param)
        if entry is None:               # no gradient this step: torch's SGD skips the parameter entirely
            continue
        group_index, scale = entry
        g = rec["groups"][group_index]
        lr, mu, tau, wd = g["lr"], g["momentum"], g["dampening"], g["weight_decay"]
        d_a, d_vec = wd * a, wd * alpha                     # d = s G_t + wd W_t
        d_vec = d_vec.copy()
        d_vec[t] += -scale if g["maximize"] else scale
        if mu != 0:
            if not has_buf:
                b, beta, has_buf = d_a, d_vec.copy(), True
            else:
                b, beta = mu * b + (1 - tau) * d_a, mu * beta + (1 - tau) * d_vec
            if g["nesterov"]:
                d_a, d_vec = d_a + mu * b, d_vec + mu * beta
            else:
                d_a, d_vec = b, beta
        a -= lr * d_a
        alpha = alpha - lr * d_vec
    return ParamCoefficients(a0=float(a), alpha=alpha)


def slot_coefficients(coeffs: ParamCoefficients, slot_steps: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 per-slot ``c_i = alpha[step(i)]`` for slots with step indices ``slot_steps``."""
    return coeffs.alpha[slot_steps]
