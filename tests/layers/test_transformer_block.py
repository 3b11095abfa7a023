from __future__ import annotations

import copy

import pytest
import torch

from qimia.layers import TransformerBlock, TransformerBlockConfig


@pytest.mark.parametrize("causal", [True, False])
def test_fused_and_manual_attention_agree(causal):
    torch.manual_seed(0)
    fused = TransformerBlock(TransformerBlockConfig(dim=32, heads=4, causal=causal, fused=True))
    manual = copy.deepcopy(fused)
    manual.attn.fused = False
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(fused(x), manual(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_causal_block_never_reads_later_tokens(fused):
    torch.manual_seed(0)
    block = TransformerBlock(TransformerBlockConfig(dim=32, heads=4, fused=fused))
    x = torch.randn(2, 7, 32)
    changed = x.clone()
    changed[:, 5:] = torch.randn(2, 2, 32)
    torch.testing.assert_close(block(x)[:, :5], block(changed)[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(block(x)[:, 5:], block(changed)[:, 5:])


def test_block_returns_the_update_so_the_residual_layer_is_x_plus_block():
    torch.manual_seed(0)
    block = TransformerBlock(TransformerBlockConfig(dim=16, heads=2))
    x = torch.randn(1, 3, 16)
    a = block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), a + block.mlp(block.norm2(x + a)))
