from __future__ import annotations

import pytest
import torch

from qimia.attention.transformer import (
    MultiHeadAttention, Transformer, TransformerConfig, causal_mask, manual_attention,
)


def test_manual_attention_is_equation_one():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 6)
    out, w = manual_attention(q, k, v)
    expected_w = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1)
    torch.testing.assert_close(w, expected_w)
    torch.testing.assert_close(out, expected_w @ v)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4))


@pytest.mark.parametrize("use_mask", [False, True])
def test_fused_equals_manual(use_mask):
    torch.manual_seed(0)
    fused, manual = MultiHeadAttention(16, 4, fused=True), MultiHeadAttention(16, 4, fused=False)
    manual.load_state_dict(fused.state_dict())
    x, mem = torch.randn(3, 5, 16, requires_grad=True), torch.randn(3, 7, 16)
    mask = causal_mask(5) if use_mask else None
    kv = x if use_mask else mem
    a, b = fused(x, kv, kv, mask), manual(x, kv, kv, mask)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    ga = torch.autograd.grad(a.sum(), x)[0]
    gb = torch.autograd.grad(b.sum(), x)[0]
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)
    if use_mask:  # causal: no weight on the future
        assert torch.all(manual.last_weights.triu(1) == 0)


def test_transformer_fused_equals_manual_and_decoder_is_causal():
    torch.manual_seed(0)
    cfg = TransformerConfig(src_vocab=9, tgt_vocab=7, d_model=16, num_heads=2, d_ff=32)
    a = Transformer(cfg)
    b = Transformer(TransformerConfig(**{**cfg.__dict__, "fused": False}))
    b.load_state_dict(a.state_dict())
    src, tgt = torch.randint(0, 9, (2, 6)), torch.randint(0, 7, (2, 4))
    src_mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    src_mask[1, ..., 4:] = False
    la, lb = a(src, tgt, src_mask), b(src, tgt, src_mask)
    assert la.shape == (2, 4, 7)
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
    tgt2 = tgt.clone()
    tgt2[:, 3] = (tgt2[:, 3] + 1) % 7  # changing the last target token cannot change earlier outputs
    torch.testing.assert_close(a(src, tgt2, src_mask)[:, :3], la[:, :3])
    src2 = src.clone()
    src2[1, 5] = (src2[1, 5] + 1) % 9  # masked (padding) source token has no influence
    torch.testing.assert_close(a(src2, tgt, src_mask)[1], la[1], atol=1e-6, rtol=1e-5)


def test_transformer_learns_to_copy():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(src_vocab=6, tgt_vocab=6, d_model=32, num_heads=2, d_ff=64,
                                          encoder_layers=1, decoder_layers=1))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(120):
        src = torch.randint(1, 6, (32, 5))
        tgt_in = torch.cat([torch.zeros(32, 1, dtype=torch.long), src[:, :-1]], 1)  # BOS = 0
        loss = torch.nn.functional.cross_entropy(model(src, tgt_in).flatten(0, 1), src.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    src = torch.randint(1, 6, (64, 5))
    acc = (model.greedy_decode(src, bos=0, steps=5) == src).float().mean()
    assert acc > 0.9


def test_bad_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
