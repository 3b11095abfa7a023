from __future__ import annotations

import torch

from qimia.attention.associative import AdditiveAttention, DotProductAttention, MemoryAttention
from qimia.addressing import content_weighting


def test_additive_attention_matches_hand_computation_and_mask():
    torch.manual_seed(0)
    att = AdditiveAttention(3, 4, 5)
    q, k, v = torch.randn(2, 3), torch.randn(2, 6, 4), torch.randn(2, 6, 7)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    ctx, alpha = att(q, k, v, mask)
    e = torch.stack([torch.stack([att.w.weight[0] @ torch.tanh(att.w_q.weight @ q[b] + att.w_k(k[b, j]))
                                  for j in range(6)]) for b in range(2)])
    e[1, 4:] = -float("inf")
    expected = torch.softmax(e, -1)
    torch.testing.assert_close(alpha, expected)
    torch.testing.assert_close(ctx, torch.einsum("bt,btd->bd", expected, v))
    assert torch.all(alpha[1, 4:] == 0)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2))


def test_dot_product_attention_retrieves_matching_item():
    keys = torch.eye(4).unsqueeze(0) * 20  # (1, 4, 4)
    values = torch.arange(4.0).view(1, 4, 1)
    ctx, alpha = DotProductAttention()(keys[:, 2], keys, values)
    assert alpha[0].argmax() == 2 and abs(ctx.item() - 2.0) < 1e-3


def test_memory_attention_is_content_read():
    torch.manual_seed(0)
    att = MemoryAttention(5, 4, heads=2)
    q, M = torch.randn(3, 5), torch.randn(3, 7, 4)
    reads, w = att(q, M)
    p = att.proj(q).view(3, 2, 5)
    expected_w = content_weighting(M, p[..., :4], torch.nn.functional.softplus(p[..., 4]))
    torch.testing.assert_close(w, expected_w)
    torch.testing.assert_close(reads, expected_w @ M)
    reads0, _ = att(q, torch.zeros(3, 7, 4))  # zero memory: finite
    assert torch.isfinite(reads0).all()
