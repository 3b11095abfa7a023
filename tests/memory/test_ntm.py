from __future__ import annotations

import pytest
import torch

from qimia.memory.ntm import NTM, NTMConfig


@pytest.mark.parametrize("controller,heads", [("lstm", (1, 1)), ("ff", (2, 3))])
def test_shapes_and_weightings_sum_to_one(controller, heads):
    torch.manual_seed(0)
    cfg = NTMConfig(input_size=5, output_size=3, controller=controller, controller_size=16, memory_slots=10,
                    word_size=6, read_heads=heads[0], write_heads=heads[1])
    ntm = NTM(cfg)
    logits, state, states = ntm(torch.randn(4, 7, 5), trace=True)
    assert logits.shape == (4, 7, 3)
    assert state.memory.shape == (4, 10, 6) and state.reads.shape == (4, heads[0], 6)
    for s in states:
        torch.testing.assert_close(s.read_weights.sum(-1), torch.ones(4, heads[0]))
        torch.testing.assert_close(s.write_weights.sum(-1), torch.ones(4, heads[1]))


def test_batch_elements_are_independent():
    torch.manual_seed(0)
    ntm = NTM(NTMConfig(input_size=5, output_size=3, controller_size=16, memory_slots=10, word_size=6))
    x = torch.randn(3, 6, 5)
    full = ntm(x)[0]
    torch.testing.assert_close(full[1:2], ntm(x[1:2])[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_no_nan_with_zero_or_constant_memory_and_zero_input(fill):
    torch.manual_seed(0)
    ntm = NTM(NTMConfig(input_size=5, output_size=3, controller_size=16, memory_slots=10, word_size=6,
                        memory_init=fill))
    logits = ntm(torch.zeros(2, 5, 5))[0]
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in ntm.parameters() if p.grad is not None)


def test_rejects_wrong_input_shape_and_an_empty_sequence():
    ntm = NTM(NTMConfig(input_size=5, output_size=3, controller_size=8, memory_slots=6, word_size=4))
    with pytest.raises(ValueError, match=r"\(B, T, 5\)"):
        ntm(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="length 0.*T >= 1"):  # was: stack expects a non-empty TensorList
        ntm(torch.randn(2, 0, 5))


@pytest.mark.parametrize("kw,match", [(dict(memory_slots=0), "memory_slots must be >= 1"),
                                      (dict(read_heads=0), "read_heads must be >= 1"),
                                      (dict(write_heads=0), "write_heads must be >= 1"),
                                      (dict(controller="gru"), "unknown controller"),
                                      (dict(memory_slots=2, shift_range=1), "memory_slots >= 3")])
def test_config_rejects_bad_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        NTMConfig(**kw)
