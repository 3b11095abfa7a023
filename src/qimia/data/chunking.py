"""Chunking: little programs of parallel chains of variable updates, for a language model.

**Why.** A task "that involves parallel steps": the network must keep the results of earlier,
independent sub-computations (one value per chain) until a later block needs them, while the
intermediate steps of every chain, and whole distractor chains, become irrelevant once consumed.
Resolving one chain left to right takes about one layer per hop, so ``hops`` asks for depth;
``chains`` asks how many such results a network holds in parallel. It is trained as plain next-token
prediction (``model=transformer_lm``, :class:`~qimia.training.tasks.LanguageModelModule`) with the
loss on the answer positions only.

**Format.** A sequence is ``chains + distractors`` chains of ``hops`` statements each, every
statement six tokens ``dst = src + c ;``, meaning::

    value(dst) = (value(src) + c) mod m,        value(_) = 0

where ``src`` is the previous variable of the same chain (``_``, the root marker, for its first
statement), ``c`` a random digit and ``m = modulus``. Every statement names a fresh variable (drawn
without replacement from a pool of ``names`` symbols ``a..z, A..Z``, then ``v52, v53, ...``). The
statements of all chains are interleaved by a uniformly random merge that keeps each chain's own
order, so every ``src`` is defined before it is used. Then come ``chains`` queries ``? x : d``, one
per queried chain in random order, ``x`` the chain's last variable and ``d`` its value; the
distractor chains and the intermediate variables are never asked. With ``op="copy"`` every
non-root statement has ``c = 0``: the answer is the root's digit, reached by pointer chasing.

Example (``op="add", chains=2, hops=2, distractors=1, modulus=10``; :meth:`ChunkingTask.decode`)::

    v = _ + 8 ; n = _ + 6 ; E = n + 5 ; R = _ + 0 ; L = v + 6 ; s = R + 6 ; ? s : 6 ? L : 4

(``v -> L``: 8, 14 mod 10 = 4; ``R -> s``: 0, 6; ``n -> E`` is the distractor chain).

**Chance and shortcuts.** An answer is uniform over the digits whatever the op: chance is
``1 / modulus``. With ``op="add"`` and ``hops >= 2`` no single digit of the program says anything
about an answer (it is a sum of independent uniform digits mod ``m``). With ``op="copy"`` (and with
``hops=1``) the answer is always one of the ``chains + distractors`` root digits: a predictor that
only counts the root digits in the sequence reaches about 0.25 at the defaults without resolving a
single chain, so read copy results against that level, not against ``1 / m``.

**Defaults.** ``op="copy", hops=2`` (4 chains, 2 distractors). In probe runs of 300 steps at
batch 32, a depth-8, width-64 Transformer LM reached test acc 0.16 (residual) and 0.14 (QIMIA),
above chance but under the root-digit level, i.e. mostly that shortcut so far; with
``op="add", hops=3`` it stayed at chance (0.10). Longer probes (``qimia train
experiment=evidence/chunking model.mixer=M`` with ``data.train_size=40000
trainer.limit_train_batches=1250``: 1,250 steps, chains=4) stayed at that level too: test acc 0.285
(residual) and 0.247 (QIMIA); with ``data.hops=1 data.chains=2 data.train_size=32000
trainer.limit_train_batches=1000`` (one lookup per query, four root digits, so about 0.3 without
any lookup) they reached 0.389 and 0.395. So at this width even the one-hop lookup is only starting
to be learned after 1,000 steps. Raise ``hops`` and ``chains``, or switch to ``op="add"``, for
harder settings, and train longer than such probes.

**Shapes.** A sequence has ``L = 6 * hops * (chains + distractors) + 4 * chains`` tokens (fixed
for fixed knobs). An item is ``(inputs (L - 1,), targets (L - 1,))`` long, ``inputs = seq[:-1]``,
``targets = seq[1:]`` with every target ``-100`` (ignored by the loss and the metrics) except the
``chains`` answers, i.e. the targets at the positions of the ``:`` tokens. Token ids: digits
``0..m-1`` first (so an answer's id is its value), then the names, then ``_ = + ; ? :``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from qimia.data.base import SplitDataModule

IGNORE = -100  # the target of a position the loss does not score (F.cross_entropy's ignore_index)
OPS = ("add", "copy")
PUNCTUATION = ("_", "=", "+", ";", "?", ":")
STATEMENT_LEN, QUERY_LEN = 6, 4  # "dst = src + c ;" and "? x : d"
SPLITS = ("train", "val", "test")  # the stream index of each split: default_rng([data_seed, index])


def name_pool(n: int) -> list[str]:
    """``n`` variable names: ``a..z``, ``A..Z``, then ``v52, v53, ...``."""
    letters = list(string.ascii_lowercase + string.ascii_uppercase)
    return letters[:n] + [f"v{i}" for i in range(len(letters), n)]


@dataclass(frozen=True)
class ChunkingTask:
    """The generator (see the module docstring for the format).

    Args:
        chains: queried chains ``k`` (results held in parallel).
        hops: statements per chain ``h`` (sequential steps of each sub-computation).
        distractors: extra chains that are never queried.
        modulus: ``m``, the values are digits ``0..m-1`` (2..10).
        names: size of the variable-name pool (at least ``hops * (chains + distractors)``).
        op: ``"add"`` (``c`` random in every statement) or ``"copy"`` (``c = 0`` after the root).
    """

    chains: int = 4
    hops: int = 2
    distractors: int = 2
    modulus: int = 10
    names: int = 48
    op: str = "copy"

    def __post_init__(self) -> None:
        for knob in ("chains", "hops"):
            if getattr(self, knob) < 1:
                raise ValueError(f"{knob} must be >= 1, got {getattr(self, knob)}; set data.{knob}=1 or more.")
        if self.distractors < 0:
            raise ValueError(f"distractors must be >= 0, got {self.distractors}; set data.distractors=0 for none.")
        if not 2 <= self.modulus <= 10:
            raise ValueError(f"modulus must be in 2..10 (values are single digits), got {self.modulus}; "
                             "set data.modulus to 2..10.")
        if self.names < self.statements:
            raise ValueError(
                f"names={self.names} is too small: each of the {self.statements} statements "
                f"(hops * (chains + distractors) = {self.hops} * ({self.chains} + {self.distractors})) needs "
                f"a distinct name; set data.names={self.statements} or more, or use fewer chains/hops/distractors."
            )
        if self.op not in OPS:
            raise ValueError(f"op must be one of {list(OPS)}, got {self.op!r}; set data.op=add or data.op=copy.")

    # ------------------------------------------------------------------ vocabulary
    @property
    def statements(self) -> int:
        """Statements per sequence, ``hops * (chains + distractors)``."""
        return self.hops * (self.chains + self.distractors)

    @property
    def length(self) -> int:
        """Tokens per sequence ``L`` (a model sees ``L - 1`` of them)."""
        return STATEMENT_LEN * self.statements + QUERY_LEN * self.chains

    @property
    def vocab(self) -> list[str]:
        """Token strings by id: digits, names, then ``_ = + ; ? :``."""
        return [str(d) for d in range(self.modulus)] + name_pool(self.names) + list(PUNCTUATION)

    @property
    def vocab_size(self) -> int:
        return self.modulus + self.names + len(PUNCTUATION)

    def token(self, symbol: str) -> int:
        """The id of a punctuation token (``"_"``, ``"="``, ...)."""
        return self.modulus + self.names + PUNCTUATION.index(symbol)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Token ids (ignored targets ``-100`` shown as ``.``) as space-separated text."""
        vocab = self.vocab
        return " ".join("." if int(i) == IGNORE else vocab[int(i)] for i in ids)

    # ------------------------------------------------------------------ generation
    def sample(self, n: int, rng: np.random.Generator) -> Tensor:
        """``n`` whole sequences ``(n, L)`` long."""
        C, h, k, m = self.chains + self.distractors, self.hops, self.chains, self.modulus
        S = C * h
        # a uniformly random merge keeping each chain's order = a random arrangement of the multiset
        # {chain c, h times}; the j-th occurrence of chain c in it is c's hop j
        labels = np.repeat(np.arange(C), h)[rng.random((n, S)).argsort(axis=1)]  # (n, S) chain of each slot
        onehot = labels[..., None] == np.arange(C)  # (n, S, C)
        hop = np.take_along_axis(onehot.cumsum(axis=1), labels[..., None], axis=2)[..., 0] - 1  # (n, S)
        # names: a random set of S distinct names, variable (c, j) gets name_ids[c * h + j]
        name_ids = self.modulus + rng.random((n, self.names)).argsort(axis=1)[:, :S]  # (n, S) token ids
        const = rng.integers(0, m, size=(n, C, h))  # (n, C, h)
        if self.op == "copy":
            const[:, :, 1:] = 0
        values = const.cumsum(axis=2) % m  # (n, C, h) value of variable (c, j)
        rows = np.arange(n)[:, None]
        dst = name_ids[rows, labels * h + hop]  # (n, S)
        src = np.where(hop == 0, self.token("_"), name_ids[rows, labels * h + np.maximum(hop - 1, 0)])
        c = const[rows, labels, hop]  # (n, S)
        statements = np.stack(
            [dst, np.full_like(dst, self.token("=")), src, np.full_like(dst, self.token("+")), c,
             np.full_like(dst, self.token(";"))], axis=2,
        ).reshape(n, S * STATEMENT_LEN)
        # queries: chains 0..k-1 (the distractors are k..C-1), in random order
        asked = rng.random((n, k)).argsort(axis=1)  # (n, k)
        queries = np.stack(
            [np.full_like(asked, self.token("?")), name_ids[rows, asked * h + h - 1],
             np.full_like(asked, self.token(":")), values[rows, asked, h - 1]], axis=2,
        ).reshape(n, k * QUERY_LEN)
        return torch.from_numpy(np.concatenate([statements, queries], axis=1)).long()

    def examples(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """``(inputs (n, L - 1), targets (n, L - 1))``: targets ``-100`` except after each ``:``."""
        seq = self.sample(n, rng)
        inputs, targets = seq[:, :-1], seq[:, 1:].clone()
        targets[inputs != self.token(":")] = IGNORE
        return inputs.contiguous(), targets


class ChunkingDataModule(SplitDataModule):
    """The chunking task (module docstring) as fixed in-memory splits for ``model=transformer_lm``.

    Every split is generated once from ``data_seed`` (its own stream
    ``numpy.random.default_rng([data_seed, split index])``), the same for every run; the run's
    ``seed`` only shuffles the training batches. ``net_kwargs`` gives ``vocab_size`` and
    ``block_size = L - 1``; ``task_kwargs`` makes the language-model module monitor answer accuracy.

    Args:
        chains, hops, distractors, modulus, names, op: the task (:class:`ChunkingTask`).
        train_size, val_size, test_size: sequences per split.
        data_seed: seed of the generated splits (not of the training shuffle).
        **kwargs: ``batch_size``, ``num_workers``, ``seed`` (see :class:`SplitDataModule`).
    """

    task = "language_modeling"

    def __init__(
        self,
        chains: int = 4,
        hops: int = 2,
        distractors: int = 2,
        modulus: int = 10,
        names: int = 48,
        op: str = "copy",
        train_size: int = 20000,
        val_size: int = 1000,
        test_size: int = 2000,
        data_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.generator = ChunkingTask(chains=chains, hops=hops, distractors=distractors, modulus=modulus,
                                      names=names, op=op)
        sizes = {"train_size": train_size, "val_size": val_size, "test_size": test_size}
        for knob, size in sizes.items():
            if size < 1:
                raise ValueError(f"{knob} must be >= 1, got {size}; set data.{knob} to a positive number of sequences.")
        if data_seed < 0:
            raise ValueError(f"data_seed must be >= 0, got {data_seed}; set data.data_seed to a non-negative integer.")
        self.sizes = (train_size, val_size, test_size)
        self.data_seed = data_seed

    @property
    def net_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.generator.vocab_size, "block_size": self.generator.length - 1}

    @property
    def task_kwargs(self) -> dict[str, Any]:
        """One token per symbol, and answer accuracy as the headline metric."""
        return {"chars_per_token": 1.0, "monitor": "acc"}

    def split(self, name: str) -> TensorDataset:
        """The ``(inputs, targets)`` of split ``name`` (``train``, ``val``, ``test``), generated afresh."""
        index = SPLITS.index(name)
        rng = np.random.default_rng([self.data_seed, index])
        return TensorDataset(*self.generator.examples(self.sizes[index], rng))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.val_set, self.test_set = (self.split(name) for name in SPLITS)
