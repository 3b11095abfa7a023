"""``mixer="residual"``: the residual stream ``x_l = x_{l-1} + f_l(x_{l-1})`` (He et al., 2016)."""

from __future__ import annotations

from torch import nn

from qimia.layers import ResidualStack
from qimia.models.mixers.spec import MixerSpec, register_mixer


def build(blocks: list[nn.Module], dim: int, *, feature_dim: int) -> ResidualStack:
    return ResidualStack(blocks)


SPEC = register_mixer(MixerSpec("residual", ResidualStack, build))
