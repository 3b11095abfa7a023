"""Where the features of a block's tensor live, and how they split into attention heads.

Every depth-mixing container accepts blocks in their native layout: tokens ``(B, T, D)``
(``feature_dim=-1``) or images ``(B, C, H, W)`` (``feature_dim=1``), or any other
``(B, *, D, *)``. Attention over depth needs two canonical views of such a tensor:

* *component* view ``(B, *P, heads, D_h)``: one row per position ``P`` (token or pixel) and
  head, with ``D_h = D / heads`` features each;
* *layer* view ``(B, heads, *P, D_h)``: one item per sample and head, read as a whole.

``FeatureLayout`` converts between the native layout and these views without copying
whenever the strides allow it.
"""

from __future__ import annotations

from torch import Tensor


class FeatureLayout:
    """Native <-> canonical views of a block tensor.

    Args:
        dim: number of features ``D`` (the size along ``feature_dim``).
        heads: number of attention heads; must divide ``dim``.
        feature_dim: index of the feature axis in the native tensor (``-1`` for tokens, ``1``
            for ``(B, C, H, W)`` images). The batch axis is always 0.
    """

    def __init__(self, dim: int, heads: int, feature_dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}.")
        if heads <= 0 or dim % heads:
            raise ValueError(
                f"heads={heads} does not divide the feature size dim={dim}: choose heads among "
                f"the divisors of {dim} (e.g. {[h for h in (1, 2, 4, 8, 16) if dim % h == 0]})."
            )
        if feature_dim == 0:
            raise ValueError("feature_dim=0 is the batch axis; use -1 for (B, T, D) or 1 for (B, C, H, W).")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.feature_dim = feature_dim

    def check(self, x: Tensor, what: str) -> None:
        """Raise a ValueError naming ``what`` unless ``x`` has ``dim`` features on ``feature_dim``."""
        if x.dim() < 2:
            raise ValueError(f"{what} must have a batch axis and a feature axis, got shape {tuple(x.shape)}.")
        if x.shape[self.feature_dim] != self.dim:
            raise ValueError(
                f"{what} has {x.shape[self.feature_dim]} features on axis feature_dim={self.feature_dim} "
                f"(shape {tuple(x.shape)}) but the container was built with dim={self.dim}. Pass the "
                "embedded input, or set feature_dim (-1 for (B, T, D), 1 for (B, C, H, W))."
            )

    def positions(self, x: Tensor) -> tuple[int, ...]:
        """The position axes ``P`` of ``x``: every axis but batch and features."""
        axis = self.feature_dim % x.dim()
        return tuple(size for i, size in enumerate(x.shape) if i not in (0, axis))

    def features_last(self, x: Tensor) -> Tensor:
        """``(B, ..., D, ...)`` -> ``(B, *P, D)`` (a view)."""
        return x.movedim(self.feature_dim, -1)

    def to_component(self, x: Tensor) -> Tensor:
        """Native -> ``(B, *P, heads, D_h)`` (a view)."""
        y = self.features_last(x)
        return y.unflatten(-1, (self.heads, self.head_dim))  # (B, *P, H, D_h)

    def from_component(self, y: Tensor, native_ndim: int) -> Tensor:
        """``(B, *P, heads, D_h)`` -> native layout."""
        y = y.flatten(-2)  # (B, *P, D)
        return y.movedim(-1, self.feature_dim % native_ndim)

    def to_layer(self, x: Tensor) -> Tensor:
        """Native -> ``(B, heads, *P, D_h)`` (a view)."""
        return self.to_component(x).movedim(-2, 1)  # (B, H, *P, D_h)

    def from_layer(self, y: Tensor, native_ndim: int) -> Tensor:
        """``(B, heads, *P, D_h)`` -> native layout."""
        return self.from_component(y.movedim(1, -2), native_ndim)

    def split(self, x: Tensor) -> Tensor:
        """Native -> native with the feature axis split in place into ``(heads, D_h)`` (a view)."""
        return x.unflatten(self.feature_dim % x.dim(), (self.heads, self.head_dim))

    def merge(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`split`."""
        axis = self.feature_dim % (y.dim() - 1)
        return y.flatten(axis, axis + 1)

    def weights_onto_split(self, weights: Tensor, native_ndim: int) -> Tensor:
        """Per-position head weights ``(S, B, *P, heads)`` -> broadcastable onto ``(S, *split)``.

        The heads axis moves to where the features were and a singleton stands for ``D_h``.
        """
        axis = 1 + self.feature_dim % native_ndim  # heads axis in (S, *split)
        return weights.movedim(-1, axis).unsqueeze(axis + 1)

    def pooled(self, x: Tensor) -> Tensor:
        """Mean over the positions: native -> ``(B, D)``."""
        y = self.features_last(x)  # (B, *P, D)
        return y.flatten(1, -2).mean(1) if y.dim() > 2 else y

    def causal_pooled(self, x: Tensor) -> Tensor:
        """Running mean over a sequence: ``(B, T, D)`` -> ``(B, T, D)``, position t sees 1..t."""
        if x.dim() != 3:
            raise ValueError(f"causal pooling needs a (B, T, D) sequence, got shape {tuple(x.shape)}.")
        y = self.features_last(x)
        steps = y.new_tensor(range(1, y.shape[1] + 1)).unsqueeze(-1)  # (T, 1)
        return y.cumsum(1) / steps


def same_shape_or_raise(block_input: Tensor, output: object, what: str) -> None:
    """Raise naming ``what`` unless the block's ``output`` is one tensor of ``block_input``'s shape.

    Raises:
        TypeError: the block returned something other than a tensor (a tuple, say).
        ValueError: it changed the shape.
    """
    if not isinstance(output, Tensor):
        raise TypeError(
            f"{what} returned a {type(output).__name__}, not a tensor: depth-mixing containers need blocks that "
            "return one tensor of their input's shape (wrap a block that returns a tuple so it returns its output "
            "tensor)."
        )
    expected, got = block_input.shape, output.shape
    if tuple(expected) != tuple(got):
        raise ValueError(
            f"{what} returned shape {tuple(got)} but its input had shape {tuple(expected)}: "
            "depth-mixing containers need blocks that keep the shape (put resolution or width "
            "changes between containers)."
        )
