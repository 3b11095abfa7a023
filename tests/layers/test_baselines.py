"""The depth-mixing baselines built from the same blocks: residual, DenseFormer, the mixer switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qimia.layers import QIMIA, DepthWeightedAverage, ResidualStack

from .conftest import TokenMLP, token_blocks


def test_residual_stack_is_the_running_sum_of_branches():
    blocks = token_blocks(3, 8)
    x = torch.randn(2, 4, 8)
    out = ResidualStack(blocks)(x)
    expected = x
    for block in blocks:
        expected = expected + block(expected)
    torch.testing.assert_close(out.output, expected, rtol=0, atol=0)
    assert len(out.values) == 4 and out.keys is None and out.attention is None


def test_depth_weighted_average_equals_the_residual_stack_at_initialisation():
    blocks = token_blocks(4, 8)
    x = torch.randn(2, 5, 8)
    dwa = DepthWeightedAverage(blocks)(x)
    torch.testing.assert_close(dwa.output, ResidualStack(blocks)(x).output, rtol=0, atol=1e-6)
    eye = torch.zeros(4, 5)
    eye[torch.arange(4), torch.arange(1, 5)] = 1.0
    torch.testing.assert_close(dwa.attention, eye)


def test_depth_weighted_average_mixes_all_earlier_states():
    blocks = token_blocks(2, 8)
    net = DepthWeightedAverage(blocks)
    with torch.no_grad():
        net.alphas[1].copy_(torch.tensor([0.5, 0.25, 0.25]))
    x = torch.randn(2, 3, 8)
    h1 = x + blocks[0](x)
    h2 = h1 + blocks[1](h1)
    torch.testing.assert_close(net(x).output, 0.5 * x + 0.25 * h1 + 0.25 * h2)
    net(x).output.sum().backward()
    assert all(alpha.grad is not None for alpha in net.alphas)


def test_depth_weighted_average_memories_agree():
    blocks = token_blocks(3, 8)
    pre, stacked = DepthWeightedAverage(blocks), DepthWeightedAverage(blocks, memory="stacked")
    stacked.load_state_dict(pre.state_dict())
    with torch.no_grad():
        for alpha in pre.alphas:
            alpha.uniform_()
        stacked.load_state_dict(pre.state_dict())
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(pre(x).output, stacked(x).output, rtol=0, atol=1e-6)




def test_baselines_reject_shape_changing_blocks():
    for container in (ResidualStack([nn.Linear(8, 4)]), DepthWeightedAverage([nn.Linear(8, 4)])):
        with pytest.raises(ValueError, match="block 1 \\(Linear\\) returned shape"):
            container(torch.randn(2, 8))


def test_shared_residual_stack_reuses_one_block():
    block = TokenMLP(8)
    net = ResidualStack.shared(block, 3)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in block.parameters())
