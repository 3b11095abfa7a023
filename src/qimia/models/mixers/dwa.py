"""``mixer="dwa"``: DenseFormer's depth-weighted average (Pagliardini et al., 2024), a learned static
mixture of every earlier state after each residual block (:class:`qimia.layers.DepthWeightedAverage`)."""

from __future__ import annotations

from torch import nn

from qimia.layers import DepthWeightedAverage
from qimia.models.mixers.spec import MixerSpec, register_mixer


def build(blocks: list[nn.Module], dim: int, *, feature_dim: int) -> DepthWeightedAverage:
    return DepthWeightedAverage(blocks)


SPEC = register_mixer(MixerSpec(
    "dwa", DepthWeightedAverage, build,
    no_decay=("alphas",),  # initialised to the identity: decay would pull them away from it
    extra_parameters=("alphas",),
    records_attention=True,
))
