"""A pre-norm transformer layer written as a *branch*: it returns the update, not the sum.

``TransformerBlock(x) = a + m`` with ``a = Attn(LN(x))`` and ``m = MLP(LN(x + a))``, so that
``x + TransformerBlock(x)`` is exactly the usual pre-norm layer. Depth-mixing containers decide
what to do with the update: :class:`~qimia.layers.residual.ResidualStack` adds it to the stream,
:class:`~qimia.layers.qimia.QIMIA` writes it into the depth memory as the value ``v_l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from qimia.layers.attention_ops import causal_mask, manual_attention


@dataclass
class TransformerBlockConfig:
    """Hyper-parameters of one :class:`TransformerBlock`."""

    dim: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    causal: bool = True
    bias: bool = False
    fused: bool | None = None  # None: use F.scaled_dot_product_attention when available


class SelfAttention(nn.Module):
    """Multi-head self-attention, ``softmax(Q K^T / sqrt(d)) V`` (causal by default)."""

    def __init__(self, config: TransformerBlockConfig) -> None:
        super().__init__()
        if config.dim % config.heads:
            raise ValueError(f"heads={config.heads} must divide dim={config.dim}.")
        self.heads, self.causal, self.dropout = config.heads, config.causal, config.dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=config.bias)
        self.proj = nn.Linear(config.dim, config.dim, bias=config.bias)
        self.fused = hasattr(F, "scaled_dot_product_attention") if config.fused is None else config.fused

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, T, D)`` -> ``(B, T, D)``."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        p = self.dropout if self.training else 0.0
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)  # (B, H, T, Dh)
        else:
            mask = causal_mask(T, x.device) if self.causal else None
            y, _ = manual_attention(q, k, v, mask, p, self.training)  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(y)


class MLP(nn.Module):
    """``W_2 GELU(W_1 x)`` with hidden width ``mlp_ratio * dim``."""

    def __init__(self, config: TransformerBlockConfig) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * config.dim)
        self.fc = nn.Linear(config.dim, hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.dim, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """Pre-norm attention + MLP, returning the update ``a + m`` (see module docstring)."""

    def __init__(self, config: TransformerBlockConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, bias=config.bias)
        self.attn = SelfAttention(config)
        self.norm2 = nn.LayerNorm(config.dim, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, T, D)`` -> update ``(B, T, D)``."""
        a = self.attn(self.norm1(x))
        return a + self.mlp(self.norm2(x + a))
