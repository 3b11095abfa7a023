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


def test_the_clean_image_estimate_has_the_input_shape_at_mnist_size():
    model = qm.create_model("qimia_unet_denoiser")  # full size: 3 levels
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == x.shape


def smooth_images(n: int, size: int = 16) -> torch.Tensor:
    """Clean images ``(n, 1, size, size)`` in [0, 1]: a bright disc of random centre and radius."""
    grid = torch.arange(size).float()
    centre = torch.rand(n, 2, 1, 1) * size
    radius = 2 + torch.rand(n, 1, 1) * size / 4
    distance = ((grid.view(1, -1, 1) - centre[:, 0]) ** 2 + (grid.view(1, 1, -1) - centre[:, 1]) ** 2).sqrt()
    return torch.sigmoid(2 * (radius - distance)).unsqueeze(1)


@pytest.mark.parametrize("name", ["unet_denoiser", "qimia_unet_denoiser"])
def test_a_few_training_steps_predict_the_clean_image_better_than_the_noisy_input(name):
    model = qm.create_model(name, **TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        clean = smooth_images(8)
        noisy = clean + 0.3 * torch.randn_like(clean)
        loss = torch.nn.functional.mse_loss(model(noisy), clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    clean = smooth_images(32)  # fresh images and noise
    noisy = clean + 0.3 * torch.randn_like(clean)
    with torch.no_grad():
        estimate = model.eval()(noisy)
    noisy_error = torch.nn.functional.mse_loss(noisy, clean).item()
    assert torch.nn.functional.mse_loss(estimate, clean).item() < 0.5 * noisy_error


def test_bad_input_is_a_clear_error():
    model = qm.create_model("unet_denoiser", **TINY)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 15, 16))
    with pytest.raises(ValueError, match="groups"):
        qm.create_model("unet_denoiser", **{**TINY, "groups": 3})
