"""The NTM's reference-compatible options (loudinthecloud/pytorch-ntm's choices) and the facts behind them:
the uniform memory buffer, the zero initial weighting, the read-before-write order."""

from __future__ import annotations

import pytest
import torch

from qimia.addressing import content_weighting
from qimia.memory.heads import read_memory
from qimia.memory.ntm import NTM, NTMConfig

SMALL = dict(input_size=5, output_size=3, controller_size=16, memory_slots=10, word_size=6)


def test_uniform_memory_is_a_fixed_buffer_shared_by_every_sequence_and_saved():
    torch.manual_seed(0)
    ntm = NTM(NTMConfig(**SMALL, memory_init_mode="uniform"))
    bound = 1.0 / (10 + 6) ** 0.5
    assert "memory_bias" in ntm.state_dict() and "memory_bias" not in dict(ntm.named_parameters())
    m0 = ntm.initial_state(3, torch.zeros(1)).memory
    assert m0.shape == (3, 10, 6) and m0.abs().max() <= bound
    torch.testing.assert_close(m0[0], m0[2])  # the same start for every sequence
    assert torch.cdist(m0[0], m0[0]).add(torch.eye(10)).min() > 0  # distinct rows
    rebuilt = NTM(NTMConfig(**SMALL, memory_init_mode="uniform"))
    rebuilt.load_state_dict(ntm.state_dict())
    torch.testing.assert_close(rebuilt.initial_state(1, torch.zeros(1)).memory, m0[:1])


def test_uniform_memory_leaves_the_parameters_of_the_constant_model():
    """The buffer is drawn after the parameters, so one seed gives the same weights in both modes (an A/B
    of the memory start alone)."""
    torch.manual_seed(0)
    a = NTM(NTMConfig(**SMALL))
    torch.manual_seed(0)
    b = NTM(NTMConfig(**SMALL, memory_init_mode="uniform"))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_constant_memory_rows_cannot_be_told_apart_by_content_but_uniform_rows_can():
    """With the constant start every key sees the same similarity to every row, so content addressing
    of an unwritten memory is uniform whatever the key; the uniform buffer's rows are addressable."""
    torch.manual_seed(0)
    constant = NTM(NTMConfig(**SMALL)).initial_state(1, torch.zeros(1)).memory
    uniform = NTM(NTMConfig(**SMALL, memory_init_mode="uniform")).initial_state(1, torch.zeros(1)).memory
    key = uniform[:, 3:4].clone()  # (1, 1, W): row 3 of the buffer
    strength = torch.tensor([[50.0]])
    torch.testing.assert_close(content_weighting(constant, key, strength), torch.full((1, 1, 10), 0.1))
    assert content_weighting(uniform, key, strength)[0, 0].argmax() == 3


def test_zero_initial_weighting_with_a_constant_memory_is_refused_because_it_stays_uniform():
    with pytest.raises(ValueError, match="symmetry"):
        NTMConfig(**SMALL, initial_weighting="zero")
    # why: built anyway, every weighting of such a model stays exactly uniform
    cfg = NTMConfig(**SMALL, initial_weighting="zero", memory_init_mode="uniform")
    cfg.memory_init_mode = "constant"
    torch.manual_seed(0)
    _, _, states = NTM(cfg)(torch.rand(2, 6, 5), trace=True)
    for s in states:
        torch.testing.assert_close(s.write_weights, torch.full_like(s.write_weights, 0.1))
        torch.testing.assert_close(s.read_weights, torch.full_like(s.read_weights, 0.1))


def test_zero_initial_weighting_starts_from_content_alone():
    torch.manual_seed(0)
    ntm = NTM(NTMConfig(**SMALL, memory_init_mode="uniform", initial_weighting="zero"))
    state = ntm.initial_state(2, torch.zeros(1))
    assert state.read_weights.abs().sum() == 0 and state.write_weights.abs().sum() == 0
    logits, last, states = ntm(torch.rand(2, 4, 5), trace=True)
    for s in states:
        torch.testing.assert_close(s.read_weights.sum(-1), torch.ones(2, 1))
        torch.testing.assert_close(s.write_weights.sum(-1), torch.ones(2, 1))
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in ntm.parameters() if p.grad is not None)


@pytest.mark.parametrize("read_first", [False, True])
def test_read_order(read_first):
    """read_first=True reads the memory before this step's write (M_{t-1}); the default reads after it (M_t)."""
    torch.manual_seed(0)
    ntm = NTM(NTMConfig(**SMALL, memory_init_mode="uniform", read_first=read_first))
    x = torch.rand(2, 3, 5)
    state = ntm.initial_state(2, x)
    _, after_one = ntm.step(x[:, 0], state)
    seen = state.memory if read_first else after_one.memory
    torch.testing.assert_close(after_one.reads, read_memory(seen, after_one.read_weights))
    assert not torch.allclose(state.memory, after_one.memory)  # the write changed the memory


@pytest.mark.parametrize("kw,match", [(dict(memory_init_mode="random"), "memory_init_mode"),
                                      (dict(initial_weighting="uniform"), "initial_weighting")])
def test_unknown_option_values_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        NTMConfig(**kw)


def test_linear_add_vectors_are_the_projection_itself():
    torch.manual_seed(0)
    ntm = NTM(NTMConfig(**SMALL, add_activation="linear"))
    h = torch.randn(4, 16) * 10
    raw = ntm.write_params.proj(h).view(4, 1, -1)[..., -6:]  # the add vector is the last W outputs
    torch.testing.assert_close(ntm.write_params(h).add, raw)
    tanh = NTM(NTMConfig(**SMALL)).write_params(h).add
    assert tanh.abs().max() <= 1.0
    with pytest.raises(ValueError, match="add_activation"):
        NTMConfig(add_activation="relu")
