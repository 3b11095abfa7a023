from __future__ import annotations

import pytest
import torch

import qimia.models as qm
from qimia.layers import QIMIA, ResidualStack

TINY = qm.tiny_kwargs("unet_denoiser")


def test_qimia_decoder_reads_the_encoder_memory_at_the_same_resolution():
    model = qm.create_model("qimia_unet_denoiser", **TINY)
    assert all(isinstance(m, QIMIA) for m in [*model.encoders, *model.decoders])
    maps = model.depth_attention(model.example_input(2))
    own = TINY["blocks_per_level"] + 1
    for level in range(len(TINY["channel_mults"])):
        assert maps[f"encoders.{level}"].shape[1] == own
        assert maps[f"decoders.{level}"].shape[1] == own + own  # encoder slots first, then its own


def test_encoder_memory_is_read_with_gradients():
    model = qm.create_model("qimia_unet_denoiser", **TINY)
    x = model.example_input(2)
    # Cut the concatenated skip and the path through the bottom: the shallowest encoder can then
    # only reach the loss through the decoder's reads of its memory.
    encoded = model.encoders[0](model.stem(x))
    out = model.decoders[0](torch.zeros_like(encoded.output), external=encoded.memory).output
    out.square().mean().backward()
    grads = [p.grad for p in model.encoders[0].parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_without_memory_reads_the_decoder_sees_only_its_own_slots():
    model = qm.create_model("qimia_unet_denoiser", **TINY, read_encoder_memory=False)
    maps = model.depth_attention(model.example_input(2))
    assert maps["decoders.0"].shape[1] == TINY["blocks_per_level"] + 1


def test_residual_unet_uses_residual_stacks_and_rejects_memory_reads():
    model = qm.create_model("unet_denoiser", **TINY)
    assert all(isinstance(m, ResidualStack) for m in [*model.encoders, *model.decoders])
    with pytest.raises(ValueError, match="read_encoder_memory"):
        qm.create_model("unet_denoiser", **TINY, read_encoder_memory=True)


def test_predicts_a_clean_image_of_the_input_shape_at_mnist_size():
    model = qm.create_model("qimia_unet_denoiser")  # full size: 3 levels
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == x.shape


def test_bad_input_is_a_clear_error():
    model = qm.create_model("unet_denoiser", **TINY)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 15, 16))
    with pytest.raises(ValueError, match="groups"):
        qm.create_model("unet_denoiser", **{**TINY, "groups": 3})
