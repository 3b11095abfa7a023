"""``mixer="attnres"``: the attention-residuals preset of QIMIA (:meth:`qimia.layers.QIMIA.attention_residuals`):
component-wise, one head, keys = RMSNorm(values) with no projection, zero-initialised queries.

The preset fixes granularity, heads and keys, so the family's QIMIA options do not reach it; it is
per-position, hence causal by construction."""

from __future__ import annotations

from torch import nn

from qimia.layers import QIMIA
from qimia.models.mixers.spec import MixerSpec, register_mixer


def build(blocks: list[nn.Module], dim: int, *, feature_dim: int, **structural: bool) -> QIMIA:
    return QIMIA.attention_residuals(blocks, dim, feature_dim=feature_dim, **structural)


SPEC = register_mixer(MixerSpec(
    "attnres", QIMIA, build,
    structural=("detach_external",),
    no_decay=("queries",),
    extra_parameters=("queries",),
    writes_memory=True,
    records_attention=True,
))
