"""The depth-mixer spec: every registered mixer's declaration is checked against what its
container does, so a new mixer file is tested by these as soon as it registers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qimia.models as qm
from qimia.models.mixers import (
    MixerSpec,
    build_mixer,
    extra_parameters,
    mixer_names,
    mixer_spec,
    no_decay_parameters,
    register_mixer,
    width_multiple,
    writes_memory,
)
from qimia.models.resnet import load_torchvision_resnet
from qimia.training.base import parameter_groups

MIXERS = mixer_names()


def blocks(n: int = 3, dim: int = 8) -> list[nn.Module]:
    return [nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(n)]


def test_the_built_in_mixers_and_the_worked_example_are_registered():
    assert {"residual", "qimia", "dwa", "attnres", "rezero"} <= set(MIXERS)


@pytest.mark.parametrize("mixer", MIXERS)
def test_each_spec_builds_its_container_and_declares_what_it_writes_and_records(mixer):
    spec = mixer_spec(mixer)
    net = build_mixer(mixer, blocks(), 8, feature_dim=-1, granularity="component", qimia_heads=2, key_dim=4)
    assert type(net) is spec.container
    x = torch.randn(2, 5, 8)
    out = net(x, return_attention=True)
    assert out.output.shape == x.shape
    assert (out.keys is not None) == spec.writes_memory == writes_memory(mixer)
    assert (out.attention is not None) == spec.records_attention


@pytest.mark.parametrize("mixer", MIXERS)
def test_no_decay_names_are_parameters_of_the_container_and_land_in_the_no_decay_group(mixer):
    net = build_mixer(mixer, blocks(), 8, feature_dim=-1)
    own = {name.split(".")[0] for name, _ in net.named_parameters()}
    assert set(mixer_spec(mixer).no_decay) <= own
    names = no_decay_parameters(net)
    assert all(n.split(".")[0] in mixer_spec(mixer).no_decay for n in names)
    _, no_decay = parameter_groups(net)
    params = dict(net.named_parameters())
    assert {id(params[n]) for n in names} <= {id(p) for p in no_decay["params"]}


def test_a_block_parameter_that_shares_a_mixer_weight_name_still_decays():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.queries = nn.Parameter(torch.randn(8, 8))  # a block's own matrix, not QIMIA's queries

        def forward(self, x):
            return x @ self.queries

    net = build_mixer("qimia", [Block(), Block()], 8, feature_dim=-1)
    assert no_decay_parameters(net) == {"queries"}  # the container's, not blocks.*.queries
    decay, _ = parameter_groups(net)
    assert id(net.blocks[0].queries) in {id(p) for p in decay["params"]}


@pytest.mark.parametrize("mixer", MIXERS)
def test_extra_parameters_are_exactly_what_the_mixer_adds_to_the_residual_layout(mixer):
    kwargs = {**qm.tiny_kwargs("resnet20"), "mixer": mixer}
    model = qm.create_model("resnet20", **kwargs)
    residual = qm.create_model("resnet20", **{**kwargs, "mixer": "residual"})
    added = set(model.state_dict()) - set(residual.state_dict())
    assert extra_parameters(model) == added


@pytest.mark.parametrize("mixer", MIXERS)
def test_torchvision_weights_load_into_every_mixer_and_leave_its_extras_as_initialised(mixer):
    resnet = pytest.importorskip("torchvision.models.resnet")
    reference = resnet.ResNet(resnet.Bottleneck, [1, 2, 1, 1])  # ResNet-50's layout, fewer blocks
    model = qm.create_model("resnet50", mixer=mixer, layers=(1, 2, 1, 1))
    before = {k: v.clone() for k, v in model.state_dict().items() if k in extra_parameters(model)}
    load_torchvision_resnet(model, reference.state_dict())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(after["fc.weight"], reference.fc.weight)


def test_width_multiple_is_the_qimia_heads_only_for_mixers_that_split_features():
    assert width_multiple("qimia", 4) == 4
    assert all(width_multiple(m, 4) == 1 for m in MIXERS if m != "qimia")
    model = qm.create_model("transformer_lm", **{**qm.tiny_kwargs("transformer_lm"), "mixer": "qimia", "qimia_heads": 2})
    assert model.width_multiple == qm.tiny_kwargs("transformer_lm")["heads"] * 2


def test_family_options_reach_only_the_mixers_that_declare_them():
    qimia = build_mixer("qimia", blocks(), 8, feature_dim=-1, granularity="component", qimia_heads=2, key_dim=4)
    assert (qimia.granularity, qimia.heads, qimia.key_dim) == ("component", 2, 4)
    attnres = build_mixer("attnres", blocks(), 8, feature_dim=-1, qimia_heads=2, key_dim=4)
    assert (attnres.heads, attnres.key_dim) == (1, 8)  # the preset fixes them
    residual = build_mixer("residual", blocks(), 8, feature_dim=-1, qimia_heads=2, causal=True)
    assert type(residual).__name__ == "ResidualStack"
    causal = build_mixer("qimia", blocks(), 8, feature_dim=-1, causal=True)
    assert causal.causal


def test_unknown_names_are_errors_that_list_the_choices():
    with pytest.raises(ValueError, match="unknown mixer 'highway'.*qimia"):
        build_mixer("highway", blocks(), 8, feature_dim=-1)
    with pytest.raises(TypeError, match="chunked"):
        build_mixer("qimia", blocks(), 8, feature_dim=-1, chunked=True)
    with pytest.raises(ValueError, match="already registered"):
        register_mixer(mixer_spec("qimia"))
    with pytest.raises(ValueError, match="unknown options"):
        MixerSpec("bad", nn.Identity, nn.Identity, options=("heads",))
