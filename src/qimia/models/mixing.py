"""Which QIMIA options a family forwards to :func:`qimia.layers.make_depth_mixer`.

Every family takes ``mixer`` in :data:`qimia.layers.MIXERS` plus the QIMIA options
``granularity``, ``qimia_heads`` and ``key_dim``. The options only reach a QIMIA container:

* ``mixer="qimia"``: all of them (and the family's extra QIMIA kwargs, e.g. ``causal``);
* ``mixer="attnres"``: the attention-residuals preset fixes granularity, heads and keys, so only
  the family's structural extras (e.g. ``detach_external``) are forwarded;
* ``mixer="residual" | "dwa"``: none (these containers have no such options).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from qimia.layers import MIXERS, make_depth_mixer

QIMIA_MIXERS = ("qimia", "attnres")


def check_mixer(mixer: str) -> None:
    """Raise a ValueError naming the valid mixers unless ``mixer`` is one of them."""
    if mixer not in MIXERS:
        raise ValueError(f"unknown mixer {mixer!r}; choose one of {list(MIXERS)}.")


def is_qimia(mixer: str) -> bool:
    """Whether ``mixer`` builds a QIMIA container (keys, queries, a depth memory)."""
    return mixer in QIMIA_MIXERS


def build_mixer(
    mixer: str,
    blocks: Sequence[nn.Module],
    dim: int,
    *,
    feature_dim: int,
    granularity: str,
    qimia_heads: int,
    key_dim: int | None,
    **structural: Any,
) -> nn.Module:
    """``make_depth_mixer`` with the family's QIMIA options routed as described in the module doc.

    Args:
        structural: QIMIA kwargs the *family* needs for its wiring (``causal``,
            ``detach_external``); forwarded to every QIMIA-based mixer.
    """
    check_mixer(mixer)
    kwargs: dict[str, Any] = {}
    if mixer == "qimia":
        kwargs = dict(granularity=granularity, heads=qimia_heads, key_dim=key_dim, **structural)
    elif mixer == "attnres":
        kwargs = {k: v for k, v in structural.items() if k != "causal"}
    return make_depth_mixer(mixer, blocks, dim, feature_dim=feature_dim, **kwargs)
