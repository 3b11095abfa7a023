"""Algorithmic tasks of the NTM paper (Graves et al., 2014, sec. 4), generated on the fly.

Every task returns a :class:`Batch` with batch-first tensors::

    inputs:  (B, T, input_size)   random bits plus delimiter / control channels
    targets: (B, T, output_size)  bits to predict (zero outside the answer)
    mask:    (B, T)               1 where the loss is taken (the answer phase)

One length is drawn per batch (so the batch is a single tensor and no Python loop runs
over it). Generation is seeded through a ``torch.Generator``.

Encodings (``width`` data bits):

* **copy**: ``x_1..x_L``, then a delimiter on channel ``width``; the answer is ``x_1..x_L``
  while the input is blank. ``T = 2L + 1``.
* **repeat copy**: ``x_1..x_L``, then on channel ``width + 1`` the repeat count ``n``
  (normalised by ``max_repeats``); the answer is ``n`` copies then an end marker on output
  channel ``width``. ``T = L + 1 + nL + 1``.
* **associative recall**: ``L`` items of ``item_len`` vectors, each item preceded by a
  delimiter on channel ``width``; then a query item (one of the first ``L - 1``) framed by
  delimiters on channel ``width + 1``; the answer is the item that followed the query.
* **dynamic N-grams**: each sequence draws a fresh table of ``2^(n-1)`` probabilities
  ``p(1 | last n-1 bits) ~ Beta(1/2, 1/2)`` and emits ``L`` bits from it; the input is bit ``t``,
  the target bit ``t + 1`` (every step is scored). :meth:`NGramTask.optimal_bits` gives the
  Bayes-optimal predictor's loss, ``p = (N_1 + 1/2) / (N_0 + N_1 + 1)`` per context.
* **priority sort**: ``L`` vectors each with a priority in ``[-1, 1]`` on channel
  ``width``, a delimiter on channel ``width + 1``; the answer is the ``n_out`` vectors of
  highest priority, in decreasing priority.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Batch(NamedTuple):
    inputs: Tensor  # (B, T, input_size)
    targets: Tensor  # (B, T, output_size)
    mask: Tensor  # (B, T)


def _bits(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen).float()


@dataclass
class CopyTask:
    width: int = 8

    @property
    def input_size(self) -> int:
        return self.width + 1

    @property
    def output_size(self) -> int:
        return self.width

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        w, T = self.width, 2 * length + 1
        seq = _bits(gen, batch, length, w)
        x = torch.zeros(batch, T, w + 1)
        x[:, :length, :w] = seq
        x[:, length, w] = 1.0  # delimiter
        y = torch.zeros(batch, T, w)
        y[:, length + 1 :] = seq
        mask = torch.zeros(batch, T)
        mask[:, length + 1 :] = 1.0
        return Batch(x, y, mask)


@dataclass
class RepeatCopyTask:
    width: int = 8
    min_repeats: int = 1
    max_repeats: int = 10

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width + 1

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        w = self.width
        n = int(torch.randint(self.min_repeats, self.max_repeats + 1, (1,), generator=gen))
        T = length + 1 + n * length + 1
        seq = _bits(gen, batch, length, w)
        x = torch.zeros(batch, T, w + 2)
        x[:, :length, :w] = seq
        x[:, length, w + 1] = n / self.max_repeats  # repeat count on its own channel
        y = torch.zeros(batch, T, w + 1)
        y[:, length + 1 : T - 1, :w] = seq.repeat(1, n, 1)  # (B, nL, w)
        y[:, T - 1, w] = 1.0  # end marker
        mask = torch.zeros(batch, T)
        mask[:, length + 1 :] = 1.0
        return Batch(x, y, mask)


@dataclass
class AssociativeRecallTask:
    width: int = 6
    item_len: int = 3

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        if length < 2:
            raise ValueError("associative recall needs at least 2 items")
        w, k = self.width, self.item_len
        items = _bits(gen, batch, length, k, w)  # (B, L, k, w)
        q = torch.randint(0, length - 1, (batch,), generator=gen)  # query index, one per sequence
        rows = torch.arange(batch)
        step = k + 1
        T = length * step + (k + 2) + k
        x = torch.zeros(batch, T, w + 2)
        body = torch.zeros(batch, length, step, w + 2)
        body[:, :, 0, w] = 1.0  # item delimiter
        body[:, :, 1:, :w] = items
        x[:, : length * step] = body.reshape(batch, length * step, w + 2)
        start = length * step
        x[:, start, w + 1] = 1.0  # query delimiter
        x[:, start + 1 : start + 1 + k, :w] = items[rows, q]  # (B, k, w)
        x[:, start + 1 + k, w + 1] = 1.0
        y = torch.zeros(batch, T, w)
        y[:, T - k :] = items[rows, q + 1]
        mask = torch.zeros(batch, T)
        mask[:, T - k :] = 1.0
        return Batch(x, y, mask)


@dataclass
class PrioritySortTask:
    width: int = 8
    n_out: int = 16

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        w, n_out = self.width, min(self.n_out, length)
        seq = _bits(gen, batch, length, w)
        prio = torch.rand(batch, length, generator=gen) * 2 - 1
        T = length + 1 + n_out
        x = torch.zeros(batch, T, w + 2)
        x[:, :length, :w] = seq
        x[:, :length, w] = prio
        x[:, length, w + 1] = 1.0
        order = prio.argsort(dim=1, descending=True)[:, :n_out]  # (B, n_out)
        y = torch.zeros(batch, T, w)
        y[:, length + 1 :] = torch.gather(seq, 1, order.unsqueeze(-1).expand(-1, -1, w))
        mask = torch.zeros(batch, T)
        mask[:, length + 1 :] = 1.0
        return Batch(x, y, mask)


@dataclass
class NGramTask:
    order: int = 6  # n: the next bit depends on the previous n - 1 bits

    @property
    def input_size(self) -> int:
        return 1

    @property
    def output_size(self) -> int:
        return 1

    def _bits_and_contexts(self, batch: int, length: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        k = self.order - 1
        # Beta(1/2, 1/2) is the arcsine law: sin^2(pi U / 2) for uniform U (seedable, unlike torch.distributions)
        table = torch.sin(torch.rand(batch, 2**k, generator=gen) * torch.pi / 2) ** 2  # (B, 2^k)
        bits = torch.zeros(batch, length + 1)
        bits[:, :k] = _bits(gen, batch, k)
        contexts = torch.zeros(batch, length + 1, dtype=torch.long)
        powers = 2 ** torch.arange(k - 1, -1, -1)
        for t in range(k, length + 1):  # loop over time only
            ctx = (bits[:, t - k : t].long() * powers).sum(1)  # (B,)
            contexts[:, t] = ctx
            p = table.gather(1, ctx[:, None]).squeeze(1)
            bits[:, t] = (torch.rand(batch, generator=gen) < p).float()
        return bits, contexts

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        if length <= self.order:
            raise ValueError(f"N-gram sequences need length > order ({self.order}), got {length}")
        bits, _ = self._bits_and_contexts(batch, length, gen)
        mask = torch.ones(batch, length)
        mask[:, : self.order - 2] = 0.0  # targets before a full context exists are coin flips
        return Batch(bits[:, :-1, None], bits[:, 1:, None], mask)

    def optimal_bits(self, batch: int, length: int, gen: torch.Generator) -> Tensor:
        """Bits per sequence of the Bayes-optimal predictor on ``batch`` fresh sequences (same masking)."""
        k = self.order - 1
        bits, contexts = self._bits_and_contexts(batch, length, gen)
        ones = torch.zeros(batch, 2**k)
        seen = torch.zeros(batch, 2**k)
        total = torch.zeros(batch)
        for t in range(k, length + 1):
            ctx = contexts[:, t : t + 1]
            p1 = (ones.gather(1, ctx) + 0.5) / (seen.gather(1, ctx) + 1.0)  # (B, 1)
            b = bits[:, t : t + 1]
            total -= torch.log2(torch.where(b > 0, p1, 1 - p1)).squeeze(1)
            ones.scatter_add_(1, ctx, b)
            seen.scatter_add_(1, ctx, torch.ones_like(b))
        return total.mean()


TASKS = {
    "copy": CopyTask,
    "repeat_copy": RepeatCopyTask,
    "associative_recall": AssociativeRecallTask,
    "priority_sort": PrioritySortTask,
    "ngrams": NGramTask,
}


def make_task(name: str, **kwargs):
    """Build a task by name; unknown names or keyword arguments raise ``ValueError``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    try:
        return TASKS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for task {name!r}: {err}") from err


class SequenceMetrics(NamedTuple):
    """Per-sequence metrics, both averaged over the batch.

    Attributes:
        bits_per_sequence: masked binary cross-entropy, summed over the sequence, in bits.
        wrong_bits_per_sequence: number of masked output bits whose rounded prediction is wrong.
    """

    bits_per_sequence: Tensor
    wrong_bits_per_sequence: Tensor


def sequence_metrics(logits: Tensor, targets: Tensor, mask: Tensor) -> SequenceMetrics:
    """Cross-entropy in bits per sequence (differentiable) and wrong bits per sequence.

    Args:
        logits: ``(B, T, O)``; targets: ``(B, T, O)``; mask: ``(B, T)``.
    """
    m = mask.unsqueeze(-1)  # (B, T, 1)
    nats = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    bits = (nats * m).sum(dim=(1, 2)).mean() / math.log(2.0)
    wrong = (((logits > 0).float() != targets).float() * m).sum(dim=(1, 2)).mean()
    return SequenceMetrics(bits, wrong.detach())
