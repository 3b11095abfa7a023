from __future__ import annotations

import pytest

import qimia.models as qm
from qimia.params import count_parameters

TINY = dict(vocab_size=64, block_size=16, dim=32, depth=3, heads=2, key_dim=None)


def test_matched_pair_resizes_the_reference_to_the_candidates_count():
    pair = qm.matched_pair("transformer_lm", "qimia_transformer_lm", **TINY)
    assert pair.knob == "dim" and pair.value % TINY["heads"] == 0
    assert pair.candidate_params == count_parameters(qm.create_model("qimia_transformer_lm", **TINY))
    assert pair.reference_params == count_parameters(pair.reference)
    unmatched = count_parameters(qm.create_model("transformer_lm", **TINY))
    assert abs(pair.relative_gap) < abs(unmatched - pair.candidate_params) / pair.candidate_params
    # No other multiple of the heads does better.
    for other in (pair.value - TINY["heads"], pair.value + TINY["heads"]):
        count = count_parameters(qm.create_model("transformer_lm", **{**TINY, "dim": other}))
        assert abs(count - pair.candidate_params) >= abs(pair.reference_params - pair.candidate_params)
    assert "parameters vs candidate" in str(pair)


def test_matched_pair_on_depth():
    pair = qm.matched_pair("shared_transformer_lm", "transformer_lm", knob="depth", **TINY)
    # One shared block has the parameters of a depth-1 unshared model: depth does not scale it.
    assert pair.knob == "depth" and pair.reference_params < pair.candidate_params


def test_matched_pair_counts_only_trainable_parameters_of_transfer_heads():
    kwargs = qm.tiny_kwargs("qimia_transfer_head")
    pair = qm.matched_pair("transfer_head", "qimia_transfer_head", **kwargs)
    assert pair.candidate_params == count_parameters(pair.candidate, trainable_only=True)
    assert abs(pair.relative_gap) < 0.1


PAIRS = [
    ("resnet20", "qimia_resnet20", {}),
    ("transformer_lm", "qimia_transformer_lm", dict(vocab_size=64, block_size=32, dim=128, depth=4, heads=4)),
    ("shared_transformer_lm", "shared_qimia_transformer_lm", dict(vocab_size=64, block_size=32, dim=128, depth=4, heads=4)),
    ("unet_denoiser", "qimia_unet_denoiser", {}),
    ("transfer_head", "qimia_transfer_head", dict(base_kwargs={"width": 4}, dim=64)),
]


@pytest.mark.parametrize("reference, candidate, kwargs", PAIRS, ids=[p[1] for p in PAIRS])
def test_registered_pairs_match_within_two_percent(reference, candidate, kwargs):
    pair = qm.matched_pair(reference, candidate, **kwargs)
    assert abs(pair.relative_gap) < 0.02, str(pair)
