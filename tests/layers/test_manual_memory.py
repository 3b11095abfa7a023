"""The hand-written depth memory (``memory="preallocated"``) against the readable references.

Every fast path (layer-wise, causal layer-wise, component-wise; folded and explicit keys; tokens and
images; external memory; no readout) must give the outputs, attention and gradients of the stacked
reference: within 1e-5 in fp32, and within 1e-2 under bf16 autocast.
"""

from __future__ import annotations

import copy

import pytest
import torch

from qimia.layers import QIMIA
from qimia.layers.depth_output import SlotKeys

from .conftest import conv_blocks, token_blocks

CONFIGS = {
    "layer": dict(granularity="layer", heads=2),
    "layer-causal": dict(granularity="layer", heads=2, causal=True),
    "component": dict(granularity="component", heads=2),
    "layer-key-dim": dict(granularity="layer", heads=4, key_dim=3),
    "component-key-dim": dict(granularity="component", heads=4, key_dim=3),
    "layer-key-norm": dict(granularity="layer", heads=2, key_norm=True),
    "attnres": dict(granularity="component", heads=1, key_projection="none", key_norm=True),
    "component-no-projection": dict(granularity="component", heads=2, key_projection="none"),
    "component-no-readout": dict(granularity="component", heads=2, readout=False),
    "causal-no-readout": dict(granularity="layer", heads=2, causal=True, readout=False),
}


def pair(net: QIMIA, reference: str = "stacked") -> tuple[QIMIA, QIMIA]:
    """The network on the fast memory and a copy on a reference memory."""
    assert net.memory_kind == "preallocated"
    other = copy.deepcopy(net)
    other.memory_kind, other.fused = reference, False
    return net, other


def run(net: QIMIA, x: torch.Tensor, bf16: bool = False, **kwargs):
    """Output, attention and the gradients of input and parameters for a fixed random loss."""
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = net(x, **kwargs)
    weight = torch.randn(out.output.shape, generator=torch.Generator().manual_seed(1))
    (out.output.float() * weight).sum().backward()
    return out, [x.grad] + [p.grad for p in net.parameters()]


def assert_close(a, b, tol: float) -> None:
    """Outputs and attention within ``tol``; gradients within ``tol`` of their scale. A parameter
    that no reader uses (the last key projection without a readout) may get zeros instead of None."""
    (out_a, grads_a), (out_b, grads_b) = a, b
    torch.testing.assert_close(out_a.output.float(), out_b.output.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(out_a.attention, out_b.attention, rtol=tol, atol=tol)
    for ga, gb in zip(grads_a, grads_b):
        if gb is None:
            assert ga is None or not ga.any()
        else:
            scale = gb.abs().max().clamp_min(1e-12)
            torch.testing.assert_close(ga / scale, gb / scale, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("reference", ["stacked", "autograd"])
def test_fast_memory_matches_the_references_in_fp32(name, reference):
    fast, slow = pair(QIMIA(token_blocks(4, 16), 16, **CONFIGS[name]), reference)
    x = torch.randn(3, 6, 16)
    assert_close(run(fast, x), run(slow, x), 1e-5)


@pytest.mark.parametrize("name", ["layer", "layer-key-dim", "layer-key-norm", "layer-no-readout"])
@pytest.mark.parametrize("phase", [1, 2, 3, 7])
def test_two_phase_reads_match_the_reference_for_any_phase(name, phase):
    """Phases of 1 (every reader alone), 2 and 3 (the last one shorter) and 7 (all readers at once)."""
    config = CONFIGS.get(name, dict(granularity="layer", heads=2, readout=False))
    fast, slow = pair(QIMIA(token_blocks(6, 16), 16, read_phase=phase, **config))
    x = torch.randn(3, 6, 16)
    assert_close(run(fast, x), run(slow, x), 1e-5)


@pytest.mark.parametrize("phase", [2, 3])
def test_two_phase_reads_match_the_reference_on_images_and_in_bf16(phase):
    net = QIMIA(conv_blocks(5, 8), 8, feature_dim=1, heads=2, key_dim=3, read_phase=phase)
    fast, slow = pair(net)
    x = torch.randn(2, 8, 5, 4)
    assert_close(run(fast, x), run(slow, x), 1e-5)
    fast, slow = pair(QIMIA(token_blocks(6, 16), 16, heads=2, read_phase=phase))
    x = torch.randn(3, 6, 16)
    _, exact = run(copy.deepcopy(slow), x)
    (_, grads_a), (_, grads_b) = run(fast, x, bf16=True), run(slow, x, bf16=True)
    for ga, gb, g in zip(grads_a, grads_b, exact):
        assert (ga - g).norm() / g.norm() <= (gb - g).norm() / g.norm() + 1e-2


@pytest.mark.parametrize("phase", [2, 4])
def test_two_phase_reads_match_the_reference_with_external_memory_and_a_partial_loss(phase):
    """The older slots' backward is batched per phase; readers that get no gradient (after slot 3) and
    external slots must not change it."""
    base = QIMIA(token_blocks(2, 16), 16, heads=2, key_dim=4)
    head = QIMIA(token_blocks(6, 16), 16, heads=2, key_dim=4, read_phase=phase, detach_external=False)
    fast, slow = pair(head)
    x = torch.randn(2, 5, 16)
    grads = []
    for net in (fast, slow):
        base.zero_grad(set_to_none=True)
        net.zero_grad(set_to_none=True)
        net(x, external=base(x).memory).values[3].square().sum().backward()
        grads.append([p.grad for p in [*net.parameters(), *base.parameters()]])
    for ga, gb in zip(*grads):
        if gb is None:
            assert ga is None or not ga.any()
        else:
            torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


def test_read_phase_needs_the_preallocated_layer_wise_memory():
    with pytest.raises(ValueError, match="memory='preallocated'"):
        QIMIA(token_blocks(2, 8), 8, memory="stacked", read_phase=2)
    with pytest.raises(ValueError, match="at least 1 reader"):
        QIMIA(token_blocks(2, 8), 8, read_phase=0)
    for per_position in (dict(granularity="component"), dict(causal=True)):
        with pytest.raises(ValueError, match="layer-wise only"):
            QIMIA(token_blocks(2, 8), 8, read_phase=2, **per_position)


@pytest.mark.parametrize("granularity", ["layer", "component"])
def test_fast_memory_matches_the_reference_on_images(granularity):
    net = QIMIA(conv_blocks(3, 8), 8, granularity=granularity, feature_dim=1, heads=2, key_dim=3)
    fast, slow = pair(net)
    x = torch.randn(2, 8, 5, 4)
    assert_close(run(fast, x), run(slow, x), 1e-5)


@pytest.mark.parametrize("name", ["layer", "layer-causal", "component", "attnres"])
def test_fast_memory_in_bf16_is_as_accurate_as_the_reference(name):
    """Under bf16 autocast both memories store bf16 values, and the blocks compute in bf16, so both
    gradients are about 1% (in norm) off the fp32 ones. Outputs agree within 1e-2; the fast path's
    gradients are within 1e-2 of the bf16 reference's error against fp32 (it accumulates in fp32)."""
    fast, slow = pair(QIMIA(token_blocks(4, 16), 16, **CONFIGS[name]))
    x = torch.randn(3, 6, 16)
    _, exact = run(copy.deepcopy(slow), x)
    (out_a, grads_a), (out_b, grads_b) = run(fast, x, bf16=True), run(slow, x, bf16=True)
    assert out_a.output.dtype == out_b.output.dtype == torch.bfloat16
    torch.testing.assert_close(out_a.output.float(), out_b.output.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out_a.attention.float(), out_b.attention.float(), rtol=1e-2, atol=1e-2)
    for ga, gb, g in zip(grads_a, grads_b, exact):
        fast_error, reference_error = (ga - g).norm() / g.norm(), (gb - g).norm() / g.norm()
        assert fast_error <= reference_error + 1e-2, (fast_error, reference_error)


@pytest.mark.parametrize("granularity", ["layer", "component"])
@pytest.mark.parametrize("detach", [True, False])
def test_fast_memory_matches_the_reference_with_external_memory(granularity, detach):
    base = QIMIA(token_blocks(3, 16), 16, granularity=granularity, heads=2, key_dim=4)
    head = QIMIA(token_blocks(2, 16), 16, granularity=granularity, heads=2, key_dim=4, detach_external=detach)
    fast, slow = pair(head)
    x = torch.randn(2, 5, 16)
    results = []
    for net in (fast, slow):
        base.zero_grad(set_to_none=True)
        out, grads = run(net, x, external=base(x).memory)
        results.append((out, grads + [p.grad for p in base.parameters()]))
    assert_close(*results, 1e-5)


@pytest.mark.parametrize("granularity", ["layer", "component"])
def test_keys_are_computed_on_access_and_match_the_reference(granularity):
    """Neither folded (per position) nor keyed (layer-wise) writes keep their keys: the output computes them."""
    fast, slow = pair(QIMIA(token_blocks(3, 16), 16, granularity=granularity, heads=2, key_dim=5))
    x = torch.randn(2, 4, 16)
    a, b = fast(x), slow(x)
    assert isinstance(a.keys, SlotKeys) and len(a.keys) == len(b.keys) == 4
    for key_a, key_b in zip(a.keys, b.keys):
        torch.testing.assert_close(key_a, key_b)
    assert a.keys[-1] is a.keys[3] and len(a.keys[1:3]) == 2
    with pytest.raises(IndexError):
        a.keys[4]


def test_a_second_backward_through_the_same_graph_starts_from_zero():
    net = QIMIA(token_blocks(3, 16), 16, granularity="component", heads=2)
    x = torch.randn(2, 4, 16, requires_grad=True)
    loss = net(x).output.square().sum()
    first = torch.autograd.grad(loss, [x, net.queries], retain_graph=True)
    second = torch.autograd.grad(loss, [x, net.queries])
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("granularity", ["layer", "component"])
def test_a_loss_on_one_slot_only_gets_that_slots_gradient(granularity):
    fast, slow = pair(QIMIA(token_blocks(4, 16), 16, granularity=granularity, heads=2))
    x = torch.randn(2, 5, 16)
    grads = []
    for net in (fast, slow):
        xi = x.clone().requires_grad_()
        net(xi).values[2].square().sum().backward()
        grads.append([xi.grad] + [p.grad for p in net.parameters()])
    for ga, gb in zip(*grads):
        if gb is None:
            assert ga is None or not ga.any()
        else:
            torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", [{"granularity": "layer", "heads": 1}, {"granularity": "component", "heads": 2}])
def test_the_gradient_pool_lends_one_buffer_across_steps_and_no_gradient_aliases_it(config):
    """dV goes back to the pool at the end of a pass and the next pass takes it; slot gradients that
    would be views of it (one head layer-wise, and component-wise) are copies, so one step's
    ``x.grad`` survives the next step."""
    net = QIMIA(token_blocks(3, 16), 16, **config)
    unpooled = copy.deepcopy(net)
    unpooled.gradient_pool = None
    assert copy.deepcopy(net).gradient_pool is not net.gradient_pool
    lent: list[int] = []
    take = net.gradient_pool.take
    net.gradient_pool.take = lambda *args: lent.append((buffer := take(*args)).data_ptr()) or buffer
    steps = [torch.randn(2, 5, 16, requires_grad=True) for _ in range(2)]
    for x in steps:
        net(x).output.square().sum().backward()
    assert lent[0] == lent[1]  # the second pass got the first one's buffer
    for x in steps:  # the first step's x.grad, computed before the buffer was reused, is intact
        reference = x.detach().clone().requires_grad_()
        unpooled.zero_grad(set_to_none=True)
        unpooled(reference).output.square().sum().backward()
        torch.testing.assert_close(x.grad, reference.grad, rtol=1e-5, atol=1e-6)


def test_no_grad_forward_matches():
    fast, slow = pair(QIMIA(token_blocks(3, 16), 16, granularity="layer", heads=2, causal=True))
    x = torch.randn(2, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x).output, slow(x).output, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("granularity", ["layer", "component"])
def test_the_memory_dies_with_its_graph(granularity, monkeypatch):
    """The graph owns the memory, never the reverse: once the output and its graph are gone the
    memory is freed at once, without the cycle collector (a cycle through autograd nodes would
    keep every step's activations alive: a leak of ~30 MB per step in an 8-layer LM)."""
    import gc
    import weakref

    from qimia.layers.manual_memory import ManualMemory

    made: list[weakref.ref] = []
    init = ManualMemory.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(weakref.ref(self))

    monkeypatch.setattr(ManualMemory, "__init__", recording_init)
    net = QIMIA(token_blocks(3, 8), 8, granularity=granularity, heads=2)
    gc.disable()
    try:
        for _ in range(2):
            net(torch.randn(2, 5, 8)).output.sum().backward()
        assert len(made) == 2 and all(ref() is None for ref in made)
    finally:
        gc.enable()
