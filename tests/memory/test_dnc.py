from __future__ import annotations

import pytest
import torch

from qimia.memory import LSTMBaseline, LSTMConfig
from qimia.memory.dnc import (
    DNC, DNCConfig, allocation_weighting, directional_weights, update_link, update_precedence, update_usage,
)


def test_allocation_picks_least_used_free_slot():
    usage = torch.tensor([[0.9, 0.2, 1.0, 0.0, 0.5]])
    a = allocation_weighting(usage)
    assert a.argmax().item() == 3 and a[0, 3] > 0.99
    # equation check with no free slot: a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i]
    usage = torch.tensor([[0.9, 0.2, 0.7]])
    a = allocation_weighting(usage)
    u = 1e-6 + (1 - 1e-6) * usage[0]
    expected = torch.stack([(1 - u[0]) * u[1] * u[2], 1 - u[1], (1 - u[2]) * u[1]])
    torch.testing.assert_close(a[0], expected)
    assert a.sum() <= 1 + 1e-6


def test_usage_follows_equation():
    u, ww = torch.tensor([[0.5, 0.0]]), torch.tensor([[0.5, 1.0]])
    f, wr = torch.tensor([[1.0]]), torch.tensor([[[1.0, 0.0]]])
    # slot 0: (0.5 + 0.5 - 0.25) * (1 - 1) = 0; slot 1: 1 * 1 = 1
    torch.testing.assert_close(update_usage(u, ww, f, wr), torch.tensor([[0.0, 1.0]]))


def _dnc(**kw):
    torch.manual_seed(0)
    cfg = DNCConfig(input_size=4, output_size=3, controller_size=16, memory_slots=6, word_size=5, read_heads=2, **kw)
    return DNC(cfg)


@pytest.mark.parametrize("usage_write_gradient", [False, True])
def test_usage_is_differentiated_through_the_previous_writes_only_on_request(usage_write_gradient):
    """deepmind/dnc stops the gradient of usage w.r.t. the previous write weights; the option keeps it."""
    access = _dnc(usage_write_gradient=usage_write_gradient).access
    state = access.initial_state(2, torch.zeros(1))
    previous = torch.rand(2, access.N, requires_grad=True)  # w^w_{t-1}, a leaf of its own
    after = access(torch.randn(2, 16), state._replace(write_weights=previous, usage=torch.rand(2, access.N)))
    (grad,) = torch.autograd.grad(after.usage.sum(), previous, allow_unused=True)
    if usage_write_gradient:
        assert grad is not None and grad.abs().sum() > 0
    else:
        assert grad is None


def test_freshly_written_slot_is_the_allocated_one():
    dnc = _dnc()
    # force write gate = allocation gate = 1 through the interface bias
    with torch.no_grad():
        lin = dnc.access.interface
        lin.weight.zero_()
        idx = sum(dnc.access.sizes[:7])  # allocation gate, write gate follow the free gates
        lin.bias[idx : idx + 2] = 50.0
    state = dnc.initial_state(1, torch.zeros(1))
    written = []
    for _ in range(6):
        _, state = dnc.step(torch.randn(1, 4), state)
        written.append(state.access.write_weights[0].argmax().item())
        assert state.access.write_weights[0].max() > 0.99
    assert sorted(written) == list(range(6))  # each step takes a fresh slot, never reuses one


def test_link_matrix_zero_diagonal_rows_sum_at_most_one_and_modes_follow_link():
    N = 5
    link, prec = torch.zeros(1, N, N), torch.zeros(1, N)
    for slot in [2, 0, 4]:  # write slots in this order
        w = torch.zeros(1, N)
        w[0, slot] = 1.0
        link = update_link(link, prec, w)
        prec = update_precedence(prec, w)
        assert torch.all(link.diagonal(dim1=1, dim2=2) == 0)
        assert torch.all(link.sum(-1) <= 1 + 1e-6)
    read = torch.zeros(1, 1, N)
    read[0, 0, 0] = 1.0  # reading slot 0 (written second)
    fwd, bwd = directional_weights(link, read)
    assert fwd[0, 0].argmax() == 4 and fwd[0, 0, 4] == 1  # forward: the slot written after 0
    assert bwd[0, 0].argmax() == 2 and bwd[0, 0, 2] == 1  # backward: the slot written before 0


def test_random_dnc_link_and_weight_invariants():
    dnc = _dnc()
    _, state, states = dnc(torch.randn(3, 8, 4), trace=True)
    for s in states:
        a = s.access
        assert torch.all(a.link.diagonal(dim1=1, dim2=2) == 0)
        assert torch.all(a.link.sum(-1) <= 1 + 1e-5) and torch.all(a.link >= 0)
        assert torch.all(a.write_weights.sum(-1) <= 1 + 1e-5)
        assert torch.all(a.read_weights.sum(-1) <= 1 + 1e-5)
        assert torch.all((a.usage >= 0) & (a.usage <= 1 + 1e-6))


@pytest.mark.parametrize("controller", ["lstm", "ff"])
def test_no_nan_on_zero_memory_outputs_and_gradients(controller):
    dnc = _dnc(controller=controller)
    logits = dnc(torch.zeros(2, 6, 4))[0]
    assert torch.isfinite(logits).all()
    logits.pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in dnc.parameters() if p.grad is not None)


def test_rejects_an_empty_sequence_and_bad_sizes():
    with pytest.raises(ValueError, match="length 0.*T >= 1"):  # was: stack expects a non-empty TensorList
        _dnc()(torch.zeros(2, 0, 4))
    with pytest.raises(ValueError, match="read_heads must be >= 1"):
        DNCConfig(read_heads=0)


def test_lstm_baseline_rejects_an_empty_sequence():
    lstm = LSTMBaseline(LSTMConfig(input_size=4, output_size=3, hidden_size=5))
    assert lstm(torch.zeros(2, 3, 4))[0].shape == (2, 3, 3)
    with pytest.raises(ValueError, match="length 0"):
        lstm(torch.zeros(2, 0, 4))
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        LSTMConfig(hidden_size=0)
