"""``mixer="qimia"``: every block writes a key and a value into a depth memory and reads its input
by softmax attention over all earlier slots with a learned query (:class:`qimia.layers.QIMIA`)."""

from __future__ import annotations

from torch import nn

from qimia.layers import QIMIA
from qimia.models.mixers.spec import MixerSpec, register_mixer


def build(
    blocks: list[nn.Module], dim: int, *, feature_dim: int, granularity: str, qimia_heads: int, key_dim: int | None,
    **structural: bool,
) -> QIMIA:
    return QIMIA(blocks, dim, feature_dim=feature_dim, granularity=granularity, heads=qimia_heads, key_dim=key_dim,
                 **structural)


SPEC = register_mixer(MixerSpec(
    "qimia", QIMIA, build,
    options=("granularity", "qimia_heads", "key_dim"),
    structural=("causal", "detach_external"),
    no_decay=("queries",),
    extra_parameters=("queries", "key_projections"),
    width_multiple=lambda qimia_heads: qimia_heads,  # the heads split the features
    writes_memory=True,
    records_attention=True,
))
