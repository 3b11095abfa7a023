"""One switch for how a stack of blocks mixes depth, shared by every model family.

``make_depth_mixer("residual" | "qimia" | "dwa" | "attnres", blocks, dim, ...)`` wraps the
*same* blocks in the chosen container, so model families expose ``mixer=...`` and every
comparison changes exactly one thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import nn

from qimia.layers.depth_weighted import DepthWeightedAverage
from qimia.layers.qimia import QIMIA
from qimia.layers.residual import ResidualStack

Mixer = Literal["residual", "qimia", "dwa", "attnres"]
MIXERS: tuple[str, ...] = ("residual", "qimia", "dwa", "attnres")


def make_depth_mixer(
    mixer: Mixer, blocks: Sequence[nn.Module], dim: int, *, feature_dim: int = -1, **qimia_kwargs: Any
) -> nn.Module:
    """Wrap ``blocks`` in a depth-mixing container.

    Args:
        mixer: ``"residual"`` (:class:`ResidualStack`), ``"qimia"`` (:class:`QIMIA`), ``"dwa"``
            (DenseFormer :class:`DepthWeightedAverage`) or ``"attnres"`` (the attention-residuals
            preset :meth:`QIMIA.attention_residuals`).
        blocks: shape-preserving blocks.
        dim: their feature size.
        feature_dim: their feature axis (``-1`` tokens, ``1`` images).
        **qimia_kwargs: options of :class:`QIMIA` (``heads``, ``key_dim``, ``granularity``, ...);
            rejected for mixers that have no such options.
    """
    if mixer == "qimia":
        return QIMIA(blocks, dim, feature_dim=feature_dim, **qimia_kwargs)
    if mixer == "attnres":
        return QIMIA.attention_residuals(blocks, dim, feature_dim=feature_dim, **qimia_kwargs)
    if mixer not in MIXERS:
        raise ValueError(f"unknown mixer {mixer!r}; choose one of {list(MIXERS)}.")
    if qimia_kwargs:
        raise TypeError(f"mixer={mixer!r} takes no QIMIA options, got {sorted(qimia_kwargs)}.")
    return ResidualStack(blocks) if mixer == "residual" else DepthWeightedAverage(blocks)
