"""Meaning tests for the QIMIA container: what each block reads is what the equations say."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from qimia.layers import QIMIA, DepthMemory

from .conftest import ConvBlock, TokenMLP, conv_blocks, token_blocks

GRANULARITIES = ["layer", "component"]


def make(granularity: str = "layer", depth: int = 4, dim: int = 16, **kw) -> QIMIA:
    return QIMIA(token_blocks(depth, dim), dim, granularity=granularity, **kw)


def record_block_inputs(net: QIMIA) -> list[torch.Tensor]:
    inputs: list[torch.Tensor] = []
    for block in net.blocks:
        block.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    return inputs


def expected_read(weights: torch.Tensor, values: list[torch.Tensor], heads: int, per_position: bool) -> torch.Tensor:
    """Reference for ``sum_i w_i v_i`` per head; tokens ``(B, T, D)``.

    weights: ``(B, H, S)`` layer-wise or ``(B, T, H, S)`` per position, over the first S slots.
    """
    stacked = torch.stack(values[: weights.shape[-1]], -1)  # (B, T, D, S)
    B, T, D, S = stacked.shape
    per_head = stacked.view(B, T, heads, D // heads, S)  # (B, T, H, Dh, S)
    if not per_position:
        weights = weights.unsqueeze(1)  # (B, 1, H, S)
    return (per_head * weights.unsqueeze(-2)).sum(-1).reshape(B, T, D)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("fused", [False, True])
def test_attention_is_a_distribution_over_earlier_slots_only(granularity, fused):
    net = make(granularity, depth=5, heads=2, fused=fused)
    out = net(torch.randn(3, 7, 16))
    attention = out.attention  # (R, *G, S)
    assert attention.shape[0] == 6 and attention.shape[-1] == 6
    for reader in range(6):
        visible = reader + 1
        row = attention[reader]
        torch.testing.assert_close(row[..., :visible].sum(-1), torch.ones_like(row[..., 0]), rtol=0, atol=1e-6)
        assert (row[..., :visible] > 0).all()
        assert torch.count_nonzero(row[..., visible:]) == 0


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_first_block_receives_exactly_the_embedded_input(granularity):
    net = make(granularity)
    inputs = record_block_inputs(net)
    x = torch.randn(2, 5, 16)
    net(x)
    assert torch.equal(inputs[0], x)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("heads", [1, 4])
def test_every_read_is_the_attention_weighted_sum_of_values(granularity, heads):
    net = make(granularity, depth=4, heads=heads, key_dim=3)
    inputs = record_block_inputs(net)
    out = net(torch.randn(2, 5, 16))
    per_position = granularity == "component"
    for layer in range(1, net.depth + 1):
        weights = out.attention[layer - 1][..., :layer]
        torch.testing.assert_close(inputs[layer - 1], expected_read(weights, out.values, heads, per_position))
    torch.testing.assert_close(out.output, expected_read(out.attention[-1], out.values, heads, per_position))


def test_values_are_the_block_outputs_and_keys_their_projections():
    net = make("layer", depth=3, heads=2, key_dim=5)
    inputs = record_block_inputs(net)
    x = torch.randn(2, 4, 16)
    out = net(x)
    assert len(out.values) == len(out.keys) == 4
    assert out.values[0] is x
    for layer, block in enumerate(net.blocks, start=1):
        torch.testing.assert_close(out.values[layer], block(inputs[layer - 1]))
        expected_key = net.key_projections[layer](out.values[layer].mean(1)).view(2, 2, 5)
        torch.testing.assert_close(out.keys[layer], expected_key)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("fused", [False, True])
def test_gradients_reach_every_parameter(granularity, fused):
    net = make(granularity, heads=2, fused=fused, key_norm=True)
    x = torch.randn(2, 5, 16, requires_grad=True)
    net(x).output.square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("key_norm", [False, True])
def test_zero_input_gives_no_nan(granularity, key_norm):
    blocks = [nn.Linear(16, 16, bias=False) for _ in range(3)]  # zero in -> zero out
    net = QIMIA(blocks, 16, granularity=granularity, key_norm=key_norm, heads=2)
    x = torch.zeros(2, 5, 16, requires_grad=True)
    out = net(x)
    out.output.sum().backward()
    assert torch.isfinite(out.output).all() and torch.isfinite(out.attention).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert torch.isfinite(x.grad).all()


def test_layer_and_component_agree_with_a_single_component():
    layer = make("layer", heads=2, key_dim=4)
    component = make("component", heads=2, key_dim=4)
    component.load_state_dict(layer.state_dict())
    x = torch.randn(3, 1, 16)
    a, b = layer(x), component(x)
    torch.testing.assert_close(a.output, b.output, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.attention, b.attention.squeeze(2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("feature_dim, shape", [(-1, (2, 6, 16)), (1, (2, 16, 4, 3))])
def test_fused_and_reference_paths_agree(feature_dim, shape):
    """Layer-wise reads: SDPA and the plain softmax-matmul path agree within 1e-5 (fp32),
    outputs and gradients. (Per-position reads have no SDPA path; the weighted-sum test
    above checks them against an independent reference.)"""
    blocks = token_blocks(4, 16) if feature_dim == -1 else conv_blocks(4, 16)
    fused = QIMIA(blocks, 16, granularity="layer", heads=4, feature_dim=feature_dim, fused=True)
    reference = copy.deepcopy(fused)
    reference.fused = False
    x = torch.randn(shape)
    outs = []
    for net in (fused, reference):
        out = net(x)
        out.output.square().sum().backward()
        outs.append((out, [p.grad.clone() for p in net.parameters()]))
    (a, grads_a), (b, grads_b) = outs
    torch.testing.assert_close(a.output, b.output, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.attention, b.attention, rtol=1e-5, atol=1e-6)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_preallocated_and_stacked_memory_agree_in_values_and_gradients(granularity):
    pre = make(granularity, heads=2, fused=False)
    stacked = copy.deepcopy(pre)
    stacked.memory_kind = "stacked"
    x = torch.randn(2, 5, 16)
    grads = []
    for net in (pre, stacked):
        xi = x.clone().requires_grad_()
        net(xi).output.pow(3).sum().backward()
        grads.append([xi.grad] + [p.grad for p in net.parameters()])
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=0, atol=1e-6)


def _saved_bytes(net: QIMIA, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward (distinct storages)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, return_attention=False).output.sum()
    return sum(storages.values())


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_saved_activations_grow_linearly_with_depth(granularity):
    x = torch.randn(2, 32, 64, requires_grad=True)
    saved = {}
    for kind in ("preallocated", "stacked"):
        for depth in (8, 16, 32):
            net = QIMIA(token_blocks(depth, 64), 64, granularity=granularity, memory=kind, fused=False)
            saved[kind, depth] = _saved_bytes(net, x)
    # Linear: doubling the depth at most doubles what is saved (plus a little).
    assert saved["preallocated", 32] / saved["preallocated", 16] < 2.1
    assert saved["preallocated", 16] / saved["preallocated", 8] < 2.1
    # The stacked reference saves every re-stacked prefix: quadratic, which is what we avoid.
    assert saved["stacked", 32] / saved["stacked", 16] > 2.5
    assert saved["preallocated", 32] < 0.5 * saved["stacked", 32]


def test_shared_weights_are_one_module():
    block = TokenMLP(16)
    net = QIMIA.shared(block, depth=4, dim=16, heads=2)
    assert all(b is block for b in net.blocks)
    unique = sum(p.numel() for p in net.parameters())
    block_params = sum(p.numel() for p in block.parameters())
    own = net.queries.numel() + sum(p.numel() for p in net.key_projections.parameters())
    assert unique == block_params + own
    assert len(net.key_projections) == 5 and net.queries.shape[0] == 5
    net(torch.randn(2, 3, 16)).output.sum().backward()
    # Every depth contributes to the one gradient: it differs from a single application's.
    single = QIMIA.shared(copy.deepcopy(block), depth=1, dim=16, heads=2)
    single(torch.randn(2, 3, 16)).output.sum().backward()
    assert not torch.allclose(block.fc.weight.grad, single.blocks[0].fc.weight.grad)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_external_memory_changes_the_output_and_gets_no_gradient_when_frozen(granularity):
    base = make(granularity, depth=3, heads=2, key_dim=4)
    head = make(granularity, depth=2, heads=2, key_dim=4)
    x = torch.randn(2, 5, 16)
    memory = base(x).memory
    alone = head(x)
    joined = head(x, memory)
    assert joined.attention.shape[-1] == len(memory.values) + 3
    assert not torch.allclose(alone.output, joined.output)
    # The readout's weights over the external slots are real (non-zero) attention.
    assert (joined.attention[-1][..., :4] > 0).all()
    joined.output.sum().backward()
    assert all(p.grad is None for p in base.parameters())
    assert all(p.grad is not None for p in head.parameters())

    trainable = make(granularity, depth=2, heads=2, key_dim=4, detach_external=False)
    trainable(x, base(x).memory).output.sum().backward()
    assert all(p.grad is not None for p in base.blocks.parameters())


def test_causal_layer_pooling_never_reads_later_tokens():
    x = torch.randn(2, 6, 16)
    changed = x.clone()
    changed[:, 4:] += 1.0
    leaky = make("layer", heads=2)
    causal = make("layer", heads=2, causal=True)
    causal.load_state_dict(leaky.state_dict())
    # Mean pooling over the whole sequence leaks the future (the reason causal=True exists) ...
    assert not torch.allclose(leaky(x).output[:, :4], leaky(changed).output[:, :4])
    # ... the running mean does not.
    torch.testing.assert_close(causal(x).output[:, :4], causal(changed).output[:, :4], rtol=0, atol=0)


def test_component_granularity_on_images_has_one_softmax_per_pixel():
    net = QIMIA(conv_blocks(3, 8), 8, granularity="component", feature_dim=1, heads=2)
    out = net(torch.randn(2, 8, 5, 4))
    assert out.output.shape == (2, 8, 5, 4)
    assert out.attention.shape == (4, 2, 5, 4, 2, 4)  # (R, B, H, W, heads, S)
    pixels = out.attention[-1].flatten(0, -2)
    assert pixels.std(0).sum() > 0  # pixels read depth differently


def test_attention_residuals_preset_starts_as_uniform_average():
    net = QIMIA.attention_residuals(token_blocks(3, 16), 16)
    assert net.key_projections is None and net.heads == 1
    out = net(torch.randn(2, 4, 16))
    for reader in range(4):
        row = out.attention[reader][..., : reader + 1]
        torch.testing.assert_close(row, torch.full_like(row, 1.0 / (reader + 1)))


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_and_stays_close(granularity, dtype):
    net = make(granularity, heads=2)
    x = torch.randn(2, 5, 16)
    reference = net(x).output
    with torch.autocast("cpu", dtype=dtype):
        out = net(x)
        out.output.float().sum().backward()
    assert out.output.dtype == dtype
    torch.testing.assert_close(out.output.float(), reference, rtol=5e-2, atol=5e-2)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_torch_compile_matches_eager():
    net = make("component", depth=2, heads=2)
    x = torch.randn(2, 5, 16)
    compiled = torch.compile(lambda t: net(t, return_attention=False).output)
    torch.testing.assert_close(compiled(x), net(x).output, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- bad input
def test_rejects_input_with_the_wrong_feature_size():
    with pytest.raises(ValueError, match="features on axis feature_dim=-1"):
        make()(torch.randn(2, 5, 15))


def test_rejects_a_block_that_changes_the_shape():
    net = QIMIA([TokenMLP(16), nn.Linear(16, 8)], 16)
    with pytest.raises(ValueError, match=r"block 2 \(Linear\) returned shape \(2, 5, 8\)"):
        net(torch.randn(2, 5, 16))


def test_rejects_heads_that_do_not_divide_the_features():
    with pytest.raises(ValueError, match="heads=3 does not divide the feature size dim=16"):
        make(heads=3)


def test_rejects_unknown_keyword_arguments():
    with pytest.raises(TypeError, match="granulatiry"):
        QIMIA(token_blocks(2, 16), 16, granulatiry="layer")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(granularity="token"), "granularity must be 'layer' or 'component'"),
        (dict(key_projection="none", key_dim=3), "key_dim must equal dim / heads"),
        (dict(granularity="component", causal=True), "causal=True only changes layer-wise"),
        (dict(memory="ring"), "memory must be one of"),
        (dict(feature_dim=0), "feature_dim=0 is the batch axis"),
    ],
)
def test_rejects_inconsistent_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_rejects_an_external_memory_of_another_shape():
    head = make("layer", heads=2)
    with pytest.raises(ValueError, match="external value 0 has shape"):
        head(torch.randn(2, 5, 16), DepthMemory([torch.randn(2, 2, 8)], [torch.randn(2, 4, 16)]))
    with pytest.raises(ValueError, match="external key 0 has shape"):
        head(torch.randn(2, 5, 16), DepthMemory([torch.randn(2, 3, 8)], [torch.randn(2, 5, 16)]))


def test_attention_residuals_rejects_overriding_its_preset():
    with pytest.raises(TypeError, match="attention_residuals fixes"):
        QIMIA.attention_residuals(token_blocks(2, 16), 16, heads=2)


def test_images_conv_blocks_forward_backward():
    net = QIMIA([ConvBlock(8) for _ in range(3)], 8, feature_dim=1, heads=2)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    out = net(x)
    assert out.output.shape == x.shape and out.attention.shape == (4, 2, 2, 4)
    out.output.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_image_reads_are_the_attention_weighted_sum_of_values(granularity):
    net = QIMIA(conv_blocks(3, 8), 8, granularity=granularity, feature_dim=1, heads=2, key_dim=3)
    inputs = record_block_inputs(net)
    out = net(torch.randn(2, 8, 5, 4))
    as_tokens = [v.flatten(2).transpose(1, 2) for v in out.values]  # (B, HW, C)
    per_position = granularity == "component"

    def check(read: torch.Tensor, weights: torch.Tensor) -> None:
        if per_position:
            weights = weights.flatten(1, 2)  # (B, H, W, heads, S) -> (B, HW, heads, S)
        expected = expected_read(weights, as_tokens, 2, per_position)  # (B, HW, C)
        torch.testing.assert_close(read.flatten(2).transpose(1, 2), expected)

    for layer in range(1, net.depth + 1):
        check(inputs[layer - 1], out.attention[layer - 1][..., :layer])
    check(out.output, out.attention[-1])


@pytest.mark.parametrize("mixer", ["residual", "qimia", "dwa", "attnres"])
def test_a_block_that_returns_a_tuple_is_named(mixer):
    class TupleBlock(nn.Module):
        def forward(self, x):
            return x, None

    from qimia.models.mixers import build_mixer

    net = build_mixer(mixer, [TupleBlock(), TupleBlock()], 8, feature_dim=-1)
    with pytest.raises(TypeError, match="block 1 \\(TupleBlock\\) returned a tuple, not a tensor"):
        net(torch.randn(2, 3, 8))


def test_a_tensor_as_external_memory_is_named():
    net = QIMIA([nn.Linear(8, 8)], dim=8)
    with pytest.raises(TypeError, match="external must be a DepthMemory"):
        net(torch.randn(2, 3, 8), torch.randn(2, 3, 8))


@pytest.mark.parametrize("granularity", ["layer", "component"])
def test_nan_in_one_sample_stays_in_that_sample(granularity):
    net = QIMIA([nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)) for _ in range(3)], dim=8, granularity=granularity)
    x = torch.randn(3, 4, 8)
    x[1, 2, 5] = float("nan")
    out = net(x).output
    assert torch.isnan(out[1]).any() and torch.isfinite(out[[0, 2]]).all()
