"""Universal Transformer encoder (Dehghani et al., 2019) with Adaptive Computation Time (Graves, 2016).

One :class:`~qimia.attention.transformer.EncoderLayer` is applied again and again (weights
tied across depth). Before each step ``t`` the coordinate embedding (position and step) is
added: ``H^t = Block(H^{t-1} + P^t)``.

ACT, per position (Graves 2016, eqs. 3-14; UT paper, Algorithm in appendix C)::

    p^t     = sigmoid(w_h . s^t + b_h)                       # halting unit, b_h initialised to 1
    N       = min{n : sum_{t<=n} p^t >= 1 - eps}  (or the last step)
    R       = 1 - sum_{t<N} p^t                               # remainder
    lambda^t = p^t for t < N,  R for t = N,  0 after          # halting weights, sum to 1
    y       = sum_t lambda^t s^t                               # halting-weighted state
    rho     = N + R                                            # ponder cost; loss += tau * mean(rho)

The state handed on is the halting-weighted sum ``y = sum_t lambda^t s^t`` (Graves 2016,
eq. 13). (The UT reference code accumulates ``y <- lambda s + (1 - lambda) y`` instead, which
rescales earlier terms; the paper's sum is used here.) Every position runs the block until
all positions have halted; positions that halted keep being updated (so others can attend to
them) but no longer contribute to their ``y``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from qimia.attention.transformer import EncoderLayer, position_signal, sinusoidal_positions


class ACTInfo(NamedTuple):
    """Per-position ACT statistics, each ``(B, T)``; ``halting_weights`` is ``(S, B, T)``.

    Attributes:
        ponder_cost: ``rho = N + R``.
        steps: ``N``, the number of updates.
        remainders: ``R``.
        halting_weights: ``lambda^t`` for each step ``t`` (sums to 1 over steps).
    """

    ponder_cost: Tensor
    steps: Tensor
    remainders: Tensor
    halting_weights: Tensor


@dataclass
class UTConfig:
    vocab: int = 12
    d_model: int = 64
    num_heads: int = 4
    d_ff: int = 128
    max_steps: int = 8
    act: bool = True  # False: always max_steps (a tied-weight deep transformer)
    act_epsilon: float = 0.01
    halting_bias_init: float = 1.0  # Graves 2016 and the UT code both initialise b_h = 1
    dropout: float = 0.0
    fused: bool = True
    max_positions: int = 0  # > 0: randomized positions drawn from 0 .. max_positions-1 (Ruoss et al. 2023)


class UniversalTransformer(nn.Module):
    """Encoder-only Universal Transformer for sequence labelling: ``(B, T)`` ids -> ``(B, T, vocab)``."""

    def __init__(self, config: UTConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab, c.d_model)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)  # O(1) after the sqrt(d_model) scale
        self.block = EncoderLayer(c.d_model, c.num_heads, c.d_ff, c.dropout, c.fused)  # the one tied block
        self.halting = nn.Linear(c.d_model, 1)
        nn.init.constant_(self.halting.bias, c.halting_bias_init)
        self.head = nn.Linear(c.d_model, c.vocab)

    def _timing(self, step: int, positions: Tensor) -> Tensor:
        """Coordinate embedding ``P^t``: the position signal ``(T, d)`` + the step signal."""
        return positions + sinusoidal_positions(self.config.max_steps, self.config.d_model, positions)[step]

    def forward(self, src: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, ACTInfo]:
        """Args: src ``(B, T)`` ids; pad_mask ``(B, T)`` True for real tokens. Returns logits and :class:`ACTInfo`."""
        c = self.config
        B, T = src.shape
        attn_mask = None if pad_mask is None else pad_mask[:, None, None, :]  # (B, 1, 1, T)
        state = self.embed(src) * c.d_model**0.5  # (B, T, d)
        positions = position_signal(T, c.d_model, state, c.max_positions)  # (T, d): one draw for every step
        if not c.act:
            for t in range(c.max_steps):
                state = self.block(state + self._timing(t, positions), attn_mask)
            ones = state.new_ones(B, T)
            weights = torch.zeros(c.max_steps, B, T, dtype=state.dtype, device=state.device)
            weights[-1] = 1.0
            info = ACTInfo(ones * c.max_steps, ones * c.max_steps, ones.new_zeros(B, T), weights)
            return self.head(state), info
        threshold = 1.0 - c.act_epsilon
        cum = state.new_zeros(B, T)  # sum of p over the steps so far
        running = state.new_ones(B, T)  # 1 while not halted
        remainders, steps = state.new_zeros(B, T), state.new_zeros(B, T)
        output = torch.zeros_like(state)
        weights = []
        for t in range(c.max_steps):
            state = state + self._timing(t, positions)
            p = torch.sigmoid(self.halting(state)).squeeze(-1)  # (B, T)
            if t == c.max_steps - 1:
                halt_now = running  # forced halt at the last step
            else:
                halt_now = ((cum + p) >= threshold).to(p.dtype) * running
            keep_going = running - halt_now
            remainder = halt_now * (1.0 - cum)  # R, for positions halting at this step
            lam = keep_going * p + remainder  # lambda^t
            cum = cum + keep_going * p
            remainders = remainders + remainder
            steps = steps + running
            running = keep_going
            state = self.block(state, attn_mask)
            output = output + lam.unsqueeze(-1) * state  # y = sum_t lambda^t s^t
            weights.append(lam)
            if not bool(running.any()):
                break
        halting_weights = torch.stack(weights)  # (S, B, T)
        return self.head(output), ACTInfo(steps + remainders, steps, remainders, halting_weights)


def ponder_loss(info: ACTInfo, tau: float, mask: Tensor | None = None) -> Tensor:
    """``tau * mean(rho)`` over (real) positions; ``rho = N + R`` (Graves 2016, eq. 12)."""
    rho = info.ponder_cost
    if mask is None:
        return tau * rho.mean()
    return tau * (rho * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class DeepTransformerConfig:
    vocab: int = 12
    d_model: int = 64
    num_heads: int = 4
    d_ff: int = 128
    layers: int = 4
    dropout: float = 0.0
    fused: bool = True
    max_positions: int = 0  # > 0: randomized positions drawn from 0 .. max_positions-1 (Ruoss et al. 2023)


class DeepTransformer(nn.Module):
    """Fixed-depth encoder (untied layers), the UT's baseline: ``(B, T)`` ids -> ``(B, T, vocab)``."""

    def __init__(self, config: DeepTransformerConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab, c.d_model)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)  # O(1) after the sqrt(d_model) scale
        self.layers = nn.ModuleList(EncoderLayer(c.d_model, c.num_heads, c.d_ff, c.dropout, c.fused)
                                    for _ in range(c.layers))
        self.head = nn.Linear(c.d_model, c.vocab)

    def forward(self, src: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, ACTInfo]:
        B, T = src.shape
        attn_mask = None if pad_mask is None else pad_mask[:, None, None, :]
        x = self.embed(src) * self.config.d_model**0.5
        x = x + position_signal(T, self.config.d_model, x, self.config.max_positions)
        for layer in self.layers:
            x = layer(x, attn_mask)
        depth = x.new_full((B, T), float(self.config.layers))
        weights = torch.zeros(self.config.layers, B, T, dtype=x.dtype, device=x.device)
        weights[-1] = 1.0
        return self.head(x), ACTInfo(depth, depth, x.new_zeros(B, T), weights)
