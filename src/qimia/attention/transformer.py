"""Transformer encoder/decoder (Vaswani et al., 2017), post-LN as in the paper.

Scaled dot-product attention, eq. (1)::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Multi-head attention, sec. 3.2.2: ``MultiHead(Q, K, V) = Concat(head_1..head_h) W^O`` with
``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``.

:class:`MultiHeadAttention` has two paths chosen once in ``__init__``: the readable manual one
(``fused=False``) that also returns the attention weights, and
``torch.nn.functional.scaled_dot_product_attention`` (``fused=True``). They are tested equal.

Masks are boolean with ``True`` = *may attend*, broadcastable to ``(B, h, T_q, T_k)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.layers.attention_ops import causal_mask, manual_attention


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a manual and a fused (SDPA) path.

    Args:
        d_model: model width; num_heads: ``h`` (``d_k = d_model / h``).
        fused: use ``F.scaled_dot_product_attention`` (no weights returned).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, fused: bool = True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.h, self.d_k, self.dropout, self.fused = num_heads, d_model // num_heads, dropout, fused
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out_proj = nn.Linear(d_model, d_model)
        self._attend = self._fused if fused else self._manual
        self.last_weights: Tensor | None = None

    def _split(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.h, self.d_k).transpose(1, 2)  # (B, h, T, d_k)

    def _fused(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                              dropout_p=self.dropout if self.training else 0.0)

    def _manual(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        out, self.last_weights = manual_attention(q, k, v, mask, self.dropout, self.training)
        return out

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args: query ``(B, T_q, d)``, key/value ``(B, T_k, d)``. Returns ``(B, T_q, d)``."""
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        out = self._attend(q, k, v, mask)  # (B, h, T_q, d_k)
        B, _, T, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, T, self.h * self.d_k))  # (B, T_q, d)


class FeedForward(nn.Sequential):
    """Position-wise ``FFN(x) = max(0, x W_1 + b_1) W_2 + b_2`` (eq. 2)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    """``x = LN(x + SelfAttn(x)); x = LN(x + FFN(x))``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0, fused: bool = True):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, num_heads, dropout, fused)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.drop(self.attn(x, x, x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder output ``memory``, FFN; each post-LN."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0, fused: bool = True):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, fused)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout, fused)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, y: Tensor, memory: Tensor, self_mask: Tensor | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        y = self.norms[0](y + self.drop(self.self_attn(y, y, y, self_mask)))
        y = self.norms[1](y + self.drop(self.cross_attn(y, memory, memory, memory_mask)))
        return self.norms[2](y + self.drop(self.ffn(y)))


def sinusoidal_positions(length: int, d_model: int, like: Tensor) -> Tensor:
    """``PE(pos, 2i) = sin(pos / 10000^(2i/d))``, ``PE(pos, 2i+1) = cos(...)``; ``(T, d)``."""
    pos = torch.arange(length, device=like.device, dtype=like.dtype).unsqueeze(1)  # (T, 1)
    div = torch.exp(torch.arange(0, d_model, 2, device=like.device, dtype=like.dtype) * (-math.log(1e4) / d_model))
    pe = torch.zeros(length, d_model, device=like.device, dtype=like.dtype)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return pe


def position_signal(length: int, d_model: int, like: Tensor, max_positions: int = 0) -> Tensor:
    """The sinusoidal signal of ``length`` positions, ``(T, d)``: positions ``0 .. T-1``, or, with
    ``max_positions > 0``, a sorted random subset of ``0 .. max_positions-1`` drawn on every call
    (randomized positional encodings, Ruoss et al. 2023, "Randomized Positional Encodings Boost
    Length Generalization of Transformers", ACL; drawn in training and evaluation alike, as in
    google-deepmind/randomized_positional_encodings), so a longer test sequence uses positions
    that training has seen.

    Raises:
        ValueError: ``length > max_positions`` (there are not enough positions to draw from).
    """
    if max_positions <= 0:
        return sinusoidal_positions(length, d_model, like)
    if length > max_positions:
        raise ValueError(f"a sequence of {length} tokens needs at least {length} positions, but max_positions="
                         f"{max_positions}; raise net.max_positions to at least the longest test length.")
    index = torch.randperm(max_positions, device=like.device)[:length].sort().values   # (T,)
    return sinusoidal_positions(max_positions, d_model, like)[index]


@dataclass
class TransformerConfig:
    src_vocab: int = 16
    tgt_vocab: int = 16
    d_model: int = 64
    num_heads: int = 4
    d_ff: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.0
    fused: bool = True


class Transformer(nn.Module):
    """Encoder/decoder Transformer over token ids.

    Embeddings are initialised with std ``d_model^-1/2`` and scaled by ``sqrt(d_model)`` (sec. 3.4),
    so token and position signals start at the same scale.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = self.config = config
        self.src_embed, self.tgt_embed = nn.Embedding(c.src_vocab, c.d_model), nn.Embedding(c.tgt_vocab, c.d_model)
        self.encoder = nn.ModuleList(EncoderLayer(c.d_model, c.num_heads, c.d_ff, c.dropout, c.fused)
                                     for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(c.d_model, c.num_heads, c.d_ff, c.dropout, c.fused)
                                     for _ in range(c.decoder_layers))
        self.generator = nn.Linear(c.d_model, c.tgt_vocab)
        for table in (self.src_embed, self.tgt_embed):
            nn.init.normal_(table.weight, std=c.d_model**-0.5)  # O(1) after the sqrt(d_model) scale

    def _embed(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        x = table(ids) * math.sqrt(self.config.d_model)  # (B, T, d)
        return x + sinusoidal_positions(ids.shape[1], self.config.d_model, x)

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Args: src ``(B, S)`` ids; src_mask ``(B, 1, 1, S)`` True for real tokens. Returns ``(B, S, d)``."""
        x = self._embed(self.src_embed, src)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return x

    def decode(self, tgt: Tensor, memory: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Args: tgt ``(B, T)`` ids (shifted right). Returns logits ``(B, T, tgt_vocab)``."""
        y = self._embed(self.tgt_embed, tgt)
        mask = causal_mask(tgt.shape[1], tgt.device)
        for layer in self.decoder:
            y = layer(y, memory, mask, src_mask)
        return self.generator(y)

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None) -> Tensor:
        return self.decode(tgt, self.encode(src, src_mask), src_mask)

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, bos: int, steps: int, src_mask: Tensor | None = None) -> Tensor:
        """Greedy decoding of ``steps`` tokens after ``bos``. Returns ``(B, steps)`` ids."""
        memory = self.encode(src, src_mask)
        ys = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
        for _ in range(steps):
            nxt = self.decode(ys, memory, src_mask)[:, -1].argmax(-1, keepdim=True)
            ys = torch.cat([ys, nxt], dim=1)
        return ys[:, 1:]
