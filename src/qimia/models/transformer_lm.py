"""GPT-style causal language model whose depth mixing is a switch: ``transformer_lm``,
``qimia_transformer_lm`` and their weight-shared (Universal-Transformer style) versions.

    h_0 = E[tokens] + P[positions]                      # (B, T, D)
    h   = mixer([TransformerBlock_1, ..., TransformerBlock_L])(h_0).output
    logits = LayerNorm(h) W_out                          # (B, T, vocab_size)

* Blocks are :class:`qimia.layers.TransformerBlock` branches (pre-norm attention + MLP returning
  the update); ``ResidualStack`` sums them (GPT-2), ``QIMIA`` writes them into a depth memory.
* QIMIA never leaks future tokens: ``granularity="component"`` (default) keys every position
  separately; ``granularity="layer"`` is built with ``causal=True`` (keys from a running mean).
* ``key_dim`` (per QIMIA head, default 64) sets what QIMIA adds: one ``D x qimia_heads*key_dim``
  key projection per slot (+1.6% at the default size). ``None`` means ``dim / qimia_heads``.
* ``tie_weights=True`` (default, GPT-2 / nanoGPT) makes the output projection the transpose of
  the token embedding, so the head adds no parameters.
* ``shared=True`` applies *one* block ``depth`` times (Universal Transformer); QIMIA still gives
  every depth its own query and key projection, so weight-shared QIMIA can read different depths
  differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.layers import TransformerBlock, TransformerBlockConfig
from qimia.models.base import RegistryModel
from qimia.models.mixers import build_mixer, width_multiple
from qimia.models.registry import register_model


@dataclass
class TransformerLMConfig:
    """Hyper-parameters of :class:`TransformerLM`."""

    vocab_size: int = 256
    block_size: int = 256
    dim: int = 384
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    bias: bool = False
    tie_weights: bool = True
    shared: bool = False
    mixer: str = "residual"
    granularity: str = "component"
    qimia_heads: int = 1
    key_dim: int | None = 64


class TransformerLM(RegistryModel):
    """Causal LM ``(B, T) long -> (B, T, vocab_size)`` logits (see the module docstring)."""

    task = "language_modeling"
    width_knob = "dim"
    fine_knob = "mlp_ratio"  # bisected when width multiples alone cannot match parameter counts within 1%

    def __init__(self, config: TransformerLMConfig) -> None:
        super().__init__()
        if config.granularity not in ("layer", "component"):
            raise ValueError(f"granularity must be 'layer' or 'component', got {config.granularity!r}.")
        if config.depth < 1 or config.block_size < 1 or config.vocab_size < 1:
            raise ValueError(f"depth, block_size and vocab_size must be >= 1, got {config}.")
        self.config = config
        self.vocab_size, self.block_size = config.vocab_size, config.block_size
        self.width_multiple = config.heads * width_multiple(config.mixer, config.qimia_heads)
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        self.position_embedding = nn.Embedding(config.block_size, config.dim)
        self.drop = nn.Dropout(config.dropout)
        block_config = TransformerBlockConfig(
            dim=config.dim, heads=config.heads, mlp_ratio=config.mlp_ratio, dropout=config.dropout,
            causal=True, bias=config.bias,
        )
        if config.shared:
            blocks = [TransformerBlock(block_config)] * config.depth
        else:
            blocks = [TransformerBlock(block_config) for _ in range(config.depth)]
        causal = {"causal": True} if config.granularity == "layer" else {}
        self.mixer = build_mixer(
            config.mixer, blocks, config.dim, feature_dim=-1, granularity=config.granularity,
            qimia_heads=config.qimia_heads, key_dim=config.key_dim, **causal,
        )
        self.norm = nn.LayerNorm(config.dim, bias=config.bias)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_weights:
            self.head.weight = self.token_embedding.weight

    def _init_weights(self) -> None:
        """GPT-2's initialisation of embeddings, blocks and head: N(0, 0.02) weights, zero biases.

        The container's own parameters (QIMIA queries and key projections, DWA weights) keep the
        initialisation the container chose."""
        modules = [self.token_embedding, self.position_embedding, self.head, *self.mixer.blocks.modules()]
        for m in modules:
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` ``(B, T)`` long, ``T <= block_size`` -> logits ``(B, T, vocab_size)``."""
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"expected token ids (B, T) of dtype long, got {tuple(tokens.shape)} {tokens.dtype}.")
        T = tokens.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size={self.block_size}; crop or rebuild.")
        positions = torch.arange(T, device=tokens.device)
        h = self.drop(self.token_embedding(tokens) + self.position_embedding(positions))  # (B, T, D)
        h = self.mixer(h, return_attention=False).output  # (B, T, D)
        return self.head(self.norm(h))  # (B, T, V)

    def loss(self, tokens: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy; ``targets`` ``(B, T)`` (``-1`` ignored)."""
        logits = self(tokens)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)

    def example_input(self, batch_size: int = 2) -> Tensor:
        device = self.token_embedding.weight.device
        return torch.randint(self.vocab_size, (batch_size, min(16, self.block_size)), device=device)


TINY_LM = dict(vocab_size=32, block_size=16, dim=16, depth=2, heads=2, key_dim=8)


def _register_lm(name: str, **defaults) -> None:
    register_model(name, tiny=TINY_LM, defaults=defaults)(transformer_lm)


def transformer_lm(
    *,
    vocab_size: int = 256,
    block_size: int = 256,
    dim: int = 384,
    depth: int = 6,
    heads: int = 6,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    bias: bool = False,
    tie_weights: bool = True,
    shared: bool = False,
    mixer: str = "residual",
    granularity: str = "component",
    qimia_heads: int = 1,
    key_dim: int | None = 64,
) -> TransformerLM:
    """GPT-style LM; defaults give a nanoGPT-"shakespeare-char"-sized model (6 x 384, ~10.7M)."""
    return TransformerLM(TransformerLMConfig(
        vocab_size=vocab_size, block_size=block_size, dim=dim, depth=depth, heads=heads,
        mlp_ratio=mlp_ratio, dropout=dropout, bias=bias, tie_weights=tie_weights, shared=shared,
        mixer=mixer, granularity=granularity, qimia_heads=qimia_heads, key_dim=key_dim,
    ))


_register_lm("transformer_lm")
_register_lm("qimia_transformer_lm", mixer="qimia")
_register_lm("shared_transformer_lm", shared=True)
_register_lm("shared_qimia_transformer_lm", shared=True, mixer="qimia")
