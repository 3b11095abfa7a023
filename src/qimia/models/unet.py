"""UNet denoiser with residual blocks at every resolution: ``unet_denoiser`` and ``qimia_unet_denoiser``.

    h = stem(x)                                                     # (B, c_0, H, W)
    encoder, level l:  e_l = mixer(ResBlocks)(h);  h = down(e_l)    # (B, c_l, H/2^l, W/2^l)
    decoder, level l:  h = merge(concat(up(h), e_l))                # long skip (not at the deepest level)
                       h = mixer(ResBlocks)(h, external=memory_l)
    clean = x - head(h)                                             # predicts the noise, returns the clean image

* Blocks are diffusion-style residual branches GroupNorm-SiLU-conv3x3-GroupNorm-SiLU-conv3x3; the
  within-resolution stacks are the depth-mixing containers (``ResidualStack`` or ``QIMIA``).
* Long skips: both versions concatenate the encoder's output at the same resolution (the usual
  UNet skip, merged by a 1x1 conv). With a QIMIA mixer and ``read_encoder_memory`` (default), the
  decoder container at level ``l`` also reads *every* slot the encoder container at level ``l``
  wrote: they are passed as external memory (keys from the encoder's own key projections,
  gradients flowing back into the encoder), so each decoder block chooses which encoder depth
  to copy from.
* Output: DnCNN-style ``clean = x - noise_hat``; the model is trained on the clean image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.models.base import RegistryModel
from qimia.models.mixers import build_mixer, width_multiple, writes_memory
from qimia.models.registry import register_model


class ResBlockBranch(nn.Module):
    """GroupNorm-SiLU-conv3x3-GroupNorm-SiLU-conv3x3: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.conv2(self.drop(F.silu(self.norm2(h))))


@dataclass
class UNetConfig:
    """Hyper-parameters of :class:`UNetDenoiser`."""

    in_chans: int = 1
    width: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    blocks_per_level: int = 2
    groups: int = 8
    dropout: float = 0.0
    mixer: str = "residual"
    granularity: str = "layer"
    qimia_heads: int = 1
    key_dim: int | None = 16
    read_encoder_memory: bool | None = None  # None: True for mixers that write a depth memory


class UNetDenoiser(RegistryModel):
    """Denoiser ``(B, in_chans, H, W) -> (B, in_chans, H, W)`` clean-image estimate;
    ``H`` and ``W`` must be divisible by ``2 ** (len(channel_mults) - 1)``."""

    task = "denoising"
    width_knob = "width"
    fine_knob = "key_dim"  # bisected when width multiples alone cannot match parameter counts within 1%

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        memory = writes_memory(config.mixer)  # an unknown mixer is a ValueError naming the registered ones
        read_memory = memory if config.read_encoder_memory is None else config.read_encoder_memory
        if read_memory and not memory:
            raise ValueError(
                f"read_encoder_memory=True needs a mixer that writes a depth memory (qimia, attnres); "
                f"mixer={config.mixer!r} writes no keys. Leave read_encoder_memory unset."
            )
        if not config.channel_mults or config.blocks_per_level < 1:
            raise ValueError("channel_mults must be non-empty and blocks_per_level >= 1.")
        channels = [config.width * m for m in config.channel_mults]
        if any(c % config.groups for c in channels):
            raise ValueError(f"groups={config.groups} must divide every level's channels {channels}.")
        self.config, self.in_chans, self.read_memory = config, config.in_chans, read_memory
        self.width_multiple = config.groups * width_multiple(config.mixer, config.qimia_heads)
        self.levels = len(channels)

        def container(c: int, **structural) -> nn.Module:
            blocks = [ResBlockBranch(c, config.groups, config.dropout) for _ in range(config.blocks_per_level)]
            return build_mixer(config.mixer, blocks, c, feature_dim=1, granularity=config.granularity,
                               qimia_heads=config.qimia_heads, key_dim=config.key_dim, **structural)

        decoder_kwargs = {"detach_external": False} if read_memory else {}
        self.stem = nn.Conv2d(config.in_chans, channels[0], 3, padding=1)
        self.encoders = nn.ModuleList(container(c) for c in channels)
        self.decoders = nn.ModuleList(container(c, **decoder_kwargs) for c in channels)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(channels, channels[1:]))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(b, a, 3, padding=1))
            for a, b in zip(channels, channels[1:])
        )
        self.merges = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in channels[:-1])
        self.head = nn.Sequential(
            nn.GroupNorm(config.groups, channels[0]), nn.SiLU(), nn.Conv2d(channels[0], config.in_chans, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` noisy images ``(B, in_chans, H, W)`` -> clean-image estimate, same shape."""
        factor = 2 ** (self.levels - 1)
        if x.dim() != 4 or x.shape[1] != self.in_chans or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"expected images (B, {self.in_chans}, H, W) with H, W divisible by {factor}, got {tuple(x.shape)}."
            )
        h = self.stem(x)  # (B, c_0, H, W)
        encoded = []
        for level, encoder in enumerate(self.encoders):
            out = encoder(h, return_attention=False)
            encoded.append(out)
            if level < self.levels - 1:
                h = self.downs[level](out.output)  # (B, c_{l+1}, H_l / 2, W_l / 2)
        h = encoded[-1].output
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                up = self.ups[level](h)  # (B, c_l, H_l, W_l)
                h = self.merges[level](torch.cat([up, encoded[level].output], dim=1))  # (B, c_l, H_l, W_l)
            kwargs = {"external": encoded[level].memory} if self.read_memory else {}
            h = self.decoders[level](h, return_attention=False, **kwargs).output
        return x - self.head(h)

    def example_input(self, batch_size: int = 2) -> Tensor:
        p = self.stem.weight
        size = max(16, 2 ** (self.levels - 1))
        return torch.randn(batch_size, self.in_chans, size, size, device=p.device, dtype=p.dtype)


@register_model("unet_denoiser", tiny=dict(width=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, key_dim=4))
@register_model(
    "qimia_unet_denoiser",
    tiny=dict(width=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, key_dim=4),
    defaults=dict(mixer="qimia"),
)
def unet_denoiser(
    *,
    in_chans: int = 1,
    width: int = 32,
    channel_mults: tuple[int, ...] = (1, 2, 2),
    blocks_per_level: int = 2,
    groups: int = 8,
    dropout: float = 0.0,
    mixer: str = "residual",
    granularity: str = "layer",
    qimia_heads: int = 1,
    key_dim: int | None = 16,
    read_encoder_memory: bool | None = None,
) -> UNetDenoiser:
    """UNet denoiser (defaults: 3 levels of 2 residual blocks, widths 32/64/64, for 28-32 px images)."""
    return UNetDenoiser(UNetConfig(
        in_chans=in_chans, width=width, channel_mults=tuple(channel_mults), blocks_per_level=blocks_per_level,
        groups=groups, dropout=dropout, mixer=mixer, granularity=granularity, qimia_heads=qimia_heads,
        key_dim=key_dim, read_encoder_memory=read_encoder_memory,
    ))
