"""Registry-wide tests over every registered model's tiny variant."""

from __future__ import annotations

import pytest
import torch

import qimia.models as qm
from qimia.layers import QIMIA
from qimia.models.base import TASKS
from qimia.models.mixers import container_classes, mixer_names
from qimia.models.registry import model_defaults

CONTRACT_NAMES = [
    "resnet20", "qimia_resnet20", "resnet50", "qimia_resnet50", "transformer_lm", "qimia_transformer_lm",
    "shared_transformer_lm", "shared_qimia_transformer_lm", "unet_denoiser", "qimia_unet_denoiser",
    "qimia_transfer_head",
]
ALL = qm.list_models()


def tiny(name: str, **overrides):
    return qm.create_model(name, **{**qm.tiny_kwargs(name), **overrides})


def expected_shape(model, x: torch.Tensor) -> tuple[int, ...]:
    if model.task == "classification":
        return (x.shape[0], model.fc.out_features)
    if model.task == "language_modeling":
        return (*x.shape, model.vocab_size)
    return tuple(x.shape)


def test_contract_names_are_registered():
    assert set(CONTRACT_NAMES) <= set(ALL)
    assert qm.list_models("*resnet20") == ["qimia_resnet20", "resnet20"]


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_every_parameter_gets_a_finite_gradient(name):
    model = tiny(name)
    assert model.task in TASKS
    x = model.example_input(2)
    y = model(x)
    assert tuple(y.shape) == expected_shape(model, x)
    assert torch.isfinite(y).all()
    y.float().square().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for param_name, p in trainable:
        assert p.grad is not None, f"{name}: {param_name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {param_name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)


@pytest.mark.parametrize("name", ALL)
def test_every_builder_takes_the_mixer_options_of_the_contract(name):
    assert {"mixer", "granularity", "qimia_heads", "key_dim"} <= set(model_defaults(name))


@pytest.mark.parametrize("name", ALL)
def test_width_knob_is_a_builder_kwarg(name):
    model = tiny(name)
    assert model.width_knob in model_defaults(name)
    assert isinstance(model.width_multiple, int) and model.width_multiple >= 1


@pytest.mark.parametrize("name", ALL)
def test_depth_attention_has_one_row_stochastic_map_per_container(name):
    model = tiny(name).eval()
    maps = model.depth_attention(model.example_input(2))
    containers = {n for n, m in model.named_modules() if isinstance(m, container_classes(records_attention=True))}
    assert set(maps) == containers
    for container_name, attention in maps.items():
        module = model.get_submodule(container_name)
        assert attention.dim() == 2 and attention.shape[0] == module.depth + int(getattr(module, "readout", False))
        if isinstance(module, QIMIA):  # each reader's softmax over its visible slots
            torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[0]))


@pytest.mark.parametrize("name", ["resnet20", "transformer_lm", "unet_denoiser"])
def test_residual_models_have_no_depth_attention(name):
    model = tiny(name)
    assert model.depth_attention(model.example_input(2)) == {}


@pytest.mark.parametrize("mixer", mixer_names())
@pytest.mark.parametrize("name", ["resnet20", "transformer_lm", "unet_denoiser", "transfer_head"])
def test_every_family_takes_every_mixer(name, mixer):
    model = tiny(name, mixer=mixer)
    out = model(model.example_input(2))
    assert torch.isfinite(out).all()


def test_qimia_name_is_the_family_with_the_qimia_mixer():
    a = tiny("qimia_resnet20")
    b = tiny("resnet20", mixer="qimia")
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert isinstance(a.stages[0].mixer, QIMIA)


@pytest.mark.parametrize("name", ["resnet20", "qimia_transformer_lm", "unet_denoiser", "qimia_transfer_head"])
def test_unknown_kwarg_is_a_type_error_naming_it(name):
    with pytest.raises(TypeError, match="not_a_kwarg"):
        qm.create_model(name, not_a_kwarg=1)


def test_unknown_model_is_a_value_error_listing_the_names():
    with pytest.raises(ValueError, match="resnet20"):
        qm.create_model("resnet21")
    with pytest.raises(ValueError, match="resnet20"):
        qm.tiny_kwargs("resnet21")


def test_unknown_mixer_is_a_value_error():
    with pytest.raises(ValueError, match="mixer"):
        tiny("resnet20", mixer="highway")


def test_register_model_rejects_duplicates_and_bad_tiny_kwargs():
    with pytest.raises(ValueError, match="already registered"):
        qm.register_model("resnet20", tiny={})(lambda: None)
    with pytest.raises(TypeError, match="nope"):
        qm.register_model("brand_new_model", tiny={"nope": 1})(lambda *, width=1: None)
    assert "brand_new_model" not in qm.list_models()


def test_tiny_kwargs_is_a_fresh_copy():
    kwargs = qm.tiny_kwargs("resnet20")
    kwargs["width"] = 999
    assert qm.tiny_kwargs("resnet20")["width"] != 999


def test_depth_attention_leaves_the_model_unchanged():
    model = tiny("qimia_resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.depth_attention(model.example_input(4))
    assert model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    assert not model.stages[0].mixer._forward_hooks and not model.stages[0].mixer._forward_pre_hooks
