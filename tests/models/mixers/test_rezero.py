"""ReZero, the worked example of adding a mixer (``qimia/models/mixers/rezero.py``)."""

from __future__ import annotations

import torch
from torch import nn

import qimia.models as qm
from qimia.layers import ResidualStack
from qimia.models.mixers import build_mixer, mixer_spec
from qimia.models.mixers.rezero import ReZeroStack


def branches(n: int = 3, dim: int = 8) -> list[nn.Module]:
    return [nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(n)]


def test_rezero_is_the_identity_at_initialisation_and_learns_its_gates():
    net = build_mixer("rezero", branches(), 8, feature_dim=-1)
    assert isinstance(net, ReZeroStack) and torch.equal(net.alpha, torch.zeros(3))
    x = torch.randn(2, 5, 8)
    out = net(x)
    torch.testing.assert_close(out.output, x, rtol=0, atol=0)
    assert len(out.values) == 4 and out.keys is None and out.attention is None
    out.output.square().sum().backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0


def test_rezero_with_unit_gates_is_the_residual_stack():
    blocks = branches()
    net = ReZeroStack(blocks)
    with torch.no_grad():
        net.alpha.fill_(1.0)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(net(x).output, ResidualStack(blocks)(x).output)


def test_rezero_gates_do_not_decay_and_every_family_builds_it():
    assert mixer_spec("rezero").no_decay == ("alpha",)
    model = qm.create_model("resnet20", **qm.tiny_kwargs("resnet20"), mixer="rezero")
    assert all(isinstance(stage.mixer, ReZeroStack) for stage in model.stages if stage.mixer is not None)
    features = torch.randn(2, qm.tiny_kwargs("resnet20")["width"], 8, 8)  # stage 1: the stem's width
    torch.testing.assert_close(model.stages[0].mixer(features).output, features, rtol=0, atol=0)
