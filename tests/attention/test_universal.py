from __future__ import annotations

import pytest
import torch

from qimia.attention.transformer import position_signal, sinusoidal_positions
from qimia.attention.universal import (
    DeepTransformer, DeepTransformerConfig, UniversalTransformer, UTConfig, ponder_loss,
)


def ut(**kw):
    torch.manual_seed(0)
    return UniversalTransformer(UTConfig(vocab=7, d_model=16, num_heads=2, d_ff=32, **kw))


def test_halting_weights_sum_to_one_and_ponder_cost_is_n_plus_r():
    model = ut(max_steps=6)
    with torch.no_grad():
        model.halting.weight.normal_(0, 0.5)  # varied halting across positions
    src = torch.randint(0, 7, (4, 9))
    _, info = model(src)
    torch.testing.assert_close(info.halting_weights.sum(0), torch.ones(4, 9))
    torch.testing.assert_close(info.ponder_cost, info.steps + info.remainders)
    assert torch.all((info.remainders > 0) & (info.remainders <= 1))
    lam = info.halting_weights  # (S, B, T)
    n = info.steps.long()
    after = torch.arange(lam.shape[0])[:, None, None] >= n[None]
    assert torch.all(lam[after] == 0)


def test_halting_weights_are_p_before_n_and_the_remainder_at_n():
    model = ut(max_steps=6)
    with torch.no_grad():
        model.halting.weight.normal_(0, 0.5)
    probs = []  # p^t of every step, (B, T) each
    handle = model.halting.register_forward_hook(lambda m, i, o: probs.append(torch.sigmoid(o).squeeze(-1)))
    _, info = model(torch.randint(0, 7, (4, 9)))
    handle.remove()
    lam, n = info.halting_weights, info.steps.long()  # (S, B, T), (B, T)
    p = torch.stack(probs)  # (S, B, T)
    assert len(n.unique()) > 1  # positions halt at different steps, so the check below sees several N
    step = torch.arange(lam.shape[0])[:, None, None]  # (S, 1, 1), 0-based: step t is lambda^{t+1}
    before = step < (n - 1)[None]  # t < N
    torch.testing.assert_close(lam[before], p[before])  # lambda^t = p^t for t < N
    lam_n = lam.gather(0, (n - 1)[None]).squeeze(0)  # (B, T): lambda^N
    torch.testing.assert_close(lam_n, info.remainders)  # lambda^N = R
    torch.testing.assert_close(info.remainders, 1 - (p * before).sum(0))  # R = 1 - sum_{t<N} p^t
    # N is the first step whose cumulative halting probability reaches 1 - eps (or the last step)
    threshold = 1 - model.config.act_epsilon
    cum = p.cumsum(0)  # (S, B, T)
    assert torch.all(cum[before] < threshold)
    cum_n = cum.gather(0, (n - 1)[None]).squeeze(0)
    assert torch.all((cum_n >= threshold) | (n == model.config.max_steps))


def test_act_equations_by_hand():
    # constant halting probability p = sigmoid(b) with zero weights: with b=1, p=0.731
    model = ut(max_steps=5)
    with torch.no_grad():
        model.halting.weight.zero_()
    _, info = model(torch.randint(0, 7, (2, 3)))
    p = torch.sigmoid(torch.tensor(1.0))
    # step 1: cum = p < 0.99; step 2: cum + p >= 0.99 -> halts at N=2 with R = 1 - p
    assert torch.all(info.steps == 2)
    torch.testing.assert_close(info.remainders, torch.full((2, 3), 1 - p.item()))
    torch.testing.assert_close(info.halting_weights[:, 0, 0], torch.stack([p, 1 - p]))
    torch.testing.assert_close(ponder_loss(info, tau=0.1), 0.1 * (2 + 1 - p))


def test_halting_bias_initialised_as_in_the_papers():
    assert ut().halting.bias.item() == 1.0


def test_output_is_halting_weighted_sum_of_states():
    model = ut(max_steps=4)
    src = torch.randint(0, 7, (2, 5))
    states = []
    handle = model.block.register_forward_hook(lambda m, i, o: states.append(o))
    _, info = model(src)
    handle.remove()
    y = sum(info.halting_weights[t].unsqueeze(-1) * s for t, s in enumerate(states))
    captured = []
    handle = model.head.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    model(src)
    handle.remove()
    torch.testing.assert_close(captured[0], y)


def test_tied_weights_are_one_module():
    model = ut(max_steps=4)
    blocks = [m for m in model.modules() if m.__class__.__name__ == "EncoderLayer"]
    assert len(blocks) == 1
    calls = []
    model.block.register_forward_hook(lambda *a: calls.append(1))
    model.config.act = False
    model(torch.randint(0, 7, (1, 3)))
    assert len(calls) == 4  # one module, applied max_steps times
    deep = DeepTransformer(DeepTransformerConfig(vocab=7, d_model=16, num_heads=2, d_ff=32, layers=4))
    n_block = sum(p.numel() for p in model.block.parameters())
    assert sum(p.numel() for p in deep.layers.parameters()) == 4 * n_block


def test_ponder_cost_gradient_reaches_halting_unit():
    model = ut(max_steps=4)
    _, info = model(torch.randint(0, 7, (2, 5)))
    ponder_loss(info, 0.01).backward()
    assert model.halting.weight.grad.abs().sum() > 0


def test_randomized_positions_are_a_sorted_draw_of_the_sinusoids_and_refuse_too_long_inputs():
    like = torch.zeros(1)
    table = sinusoidal_positions(64, 16, like)
    torch.manual_seed(0)
    drawn = position_signal(10, 16, like, max_positions=64)                 # (10, 16) rows of the table
    index = [int((table - row).abs().sum(1).argmin()) for row in drawn]
    assert index == sorted(set(index)) and len(index) == 10 and max(index) >= 10  # increasing, beyond 0..9
    assert torch.equal(drawn, table[index])
    assert torch.equal(position_signal(10, 16, like), table[:10])          # max_positions=0: 0..T-1
    with pytest.raises(ValueError, match="raise net.max_positions"):
        position_signal(65, 16, like, max_positions=64)


def test_randomized_positions_reach_every_model_and_one_draw_serves_all_ut_steps():
    src = torch.randint(1, 7, (2, 5))
    for model in (ut(max_steps=3, max_positions=32), DeepTransformer(DeepTransformerConfig(
            vocab=7, d_model=16, num_heads=2, d_ff=32, layers=2, max_positions=32))):
        torch.manual_seed(1)
        a = model(src)[0]
        torch.manual_seed(2)
        assert not torch.allclose(a, model(src)[0])                         # a new draw per forward
        torch.manual_seed(1)
        assert torch.equal(a, model(src)[0])                                # reproducible under a seed
    model, calls = ut(max_steps=3, act=False, max_positions=32), []
    original = model._timing
    model._timing = lambda t, positions: calls.append(positions) or original(t, positions)
    model(src)
    assert len(calls) == 3 and all(c is calls[0] for c in calls)              # the same positions at every step
