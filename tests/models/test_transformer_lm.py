from __future__ import annotations

import pytest
import torch

import qimia.models as qm
from qimia.layers import QIMIA

TINY = qm.tiny_kwargs("transformer_lm")


@pytest.mark.parametrize(
    "mixer, granularity",
    [("residual", "component"), ("dwa", "component"), ("attnres", "component"), ("qimia", "component"),
     ("qimia", "layer")],
)
@pytest.mark.parametrize("shared", [False, True])
def test_no_position_sees_later_tokens(mixer, granularity, shared):
    model = qm.create_model("transformer_lm", **TINY, mixer=mixer, granularity=granularity, qimia_heads=2,
                            shared=shared).eval()
    tokens = torch.randint(TINY["vocab_size"], (2, 12))
    t = 5
    changed = tokens.clone()
    changed[:, t + 1 :] = torch.randint(TINY["vocab_size"], (2, 12 - t - 1))
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_layerwise_qimia_is_built_causal():
    model = qm.create_model("qimia_transformer_lm", **TINY, granularity="layer")
    assert isinstance(model.mixer, QIMIA) and model.mixer.causal and model.mixer.granularity == "layer"


def test_shared_variant_repeats_one_block():
    shared = qm.create_model("shared_qimia_transformer_lm", **TINY)
    assert len({id(b) for b in shared.mixer.blocks}) == 1 and shared.mixer.depth == TINY["depth"]
    # QIMIA still has one query per reader and one key projection per slot.
    assert shared.mixer.queries.shape[0] == TINY["depth"] + 1 and len(shared.mixer.key_projections) == TINY["depth"] + 1


def test_tied_head_is_the_token_embedding():
    tied = qm.create_model("transformer_lm", **TINY)
    untied = qm.create_model("transformer_lm", **TINY, tie_weights=False)
    assert tied.head.weight is tied.token_embedding.weight
    n = TINY["vocab_size"] * TINY["dim"]
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == n


def test_heads_and_key_dim_are_options():
    model = qm.create_model("qimia_transformer_lm", **{**TINY, "key_dim": 6}, qimia_heads=4)
    assert model.mixer.heads == 4 and model.mixer.key_dim == 6
    assert model.width_multiple == TINY["heads"] * 4


def test_loss_is_next_token_cross_entropy_near_log_vocab_at_init():
    model = qm.create_model("qimia_transformer_lm", **TINY)
    tokens = torch.randint(TINY["vocab_size"], (4, 16))
    loss = model.loss(tokens[:, :-1], tokens[:, 1:])
    assert abs(loss.item() - torch.log(torch.tensor(float(TINY["vocab_size"]))).item()) < 0.5


def test_bad_inputs_are_clear_errors():
    model = qm.create_model("transformer_lm", **TINY)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, TINY["block_size"] + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="long"):
        model(torch.zeros(1, 4))
