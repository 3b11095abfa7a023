"""Algorithmic tasks of the NTM paper (Graves et al., 2014, sec. 4) as seeded data sets.

**Task protocol** (:class:`AlgorithmicTask`): a task is a dataclass that carries its own defaults,
its data width and its training lengths (``min_len``, ``max_len``), and says its channel sizes and
how to draw a batch::

    task = CopyTask()                        # width 8, lengths 1-20: the paper's copy setup
    task.input_size, task.output_size        # 9, 8
    batch = task.sample(16, 20, generator)   # Batch(inputs, targets, mask, length)

Every batch is batch-first::

    inputs:  (B, T, input_size)   random bits plus delimiter / control channels
    targets: (B, T, output_size)  bits to predict (zero outside the answer)
    mask:    (B, T)               1 where the loss is taken (the answer phase)
    length:  int                  the task's length parameter the batch was drawn with

One length is drawn per batch (so the batch is a single tensor and no Python loop runs over it).

Encodings (``width`` data bits):

* **copy**: ``x_1..x_L``, then a delimiter on channel ``width``; the answer is ``x_1..x_L`` while
  the input is blank. ``T = 2L + 1``.
* **repeat copy**: ``x_1..x_L``, then on channel ``width + 1`` the repeat count ``n`` (normalised
  by ``max_repeats``); the answer is ``n`` copies then an end marker on output channel ``width``.
  ``T = L + 1 + nL + 1``.
* **associative recall**: ``L`` items of ``item_len`` vectors, each item preceded by a delimiter on
  channel ``width``; then a query item (one of the first ``L - 1``) framed by delimiters on
  channel ``width + 1``; the answer is the item that followed the query.
* **dynamic N-grams**: each sequence draws a fresh table of ``2^(n-1)`` probabilities
  ``p(1 | last n-1 bits) ~ Beta(1/2, 1/2)`` and emits ``L`` bits from it; the input is bit ``t``,
  the target bit ``t + 1``. :meth:`NGramTask.optimal_bits` gives the Bayes-optimal predictor's
  loss, ``p = (N_1 + 1/2) / (N_0 + N_1 + 1)`` per context.
* **priority sort**: ``L`` vectors each with a priority in ``[-1, 1]`` on channel ``width``, a
  delimiter on channel ``width + 1``; the answer is the ``n_out`` vectors of highest priority, in
  decreasing priority.

**Data sets**: :class:`AlgorithmicDataModule` serves training batches drawn from
``(seed, batch index)`` only (so a resumed run sees exactly the batches of an uninterrupted run,
and every DDP process draws its own), and fixed evaluation sets of fresh
sequences at every training length plus extra generalisation lengths.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class Batch(NamedTuple):
    """One batch of a task (see the module docstring for the shapes)."""

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    length: int


def _bits(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen).float()


@dataclass
class AlgorithmicTask(ABC):
    """The task protocol. Subclasses are dataclasses whose fields are the task's knobs, with the
    paper's values as defaults, including the training lengths ``min_len`` and ``max_len``."""

    name: ClassVar[str]
    #: the shortest length :meth:`sample` accepts
    shortest: ClassVar[int] = 1
    min_len: int
    max_len: int

    def __post_init__(self) -> None:
        if not self.shortest <= self.min_len <= self.max_len:
            raise ValueError(f"{self.name}: need {self.shortest} <= min_len <= max_len, got min_len={self.min_len}, "
                             f"max_len={self.max_len}.")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and f.name not in ("min_len", "max_len") and value < 1:
                raise ValueError(f"{self.name}: {f.name} must be >= 1, got {value}.")

    @property
    def lengths(self) -> list[int]:
        """The training lengths ``min_len .. max_len``."""
        return list(range(self.min_len, self.max_len + 1))

    @property
    @abstractmethod
    def input_size(self) -> int: ...

    @property
    @abstractmethod
    def output_size(self) -> int: ...

    @abstractmethod
    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        """``batch`` sequences of one ``length``, drawn from ``gen``."""

    def check_length(self, length: int) -> None:
        """Raise ``ValueError`` unless ``length`` is one :meth:`sample` can draw."""
        if length < self.shortest:
            raise ValueError(f"{self.name} sequences need length >= {self.shortest}, got {length}.")

    def optimal_bits(self, batch: int, length: int, gen: torch.Generator) -> float | None:
        """Bits per sequence of the best possible predictor, where known (``None`` otherwise)."""
        return None


@dataclass
class CopyTask(AlgorithmicTask):
    name: ClassVar[str] = "copy"
    width: int = 8
    min_len: int = 1
    max_len: int = 20

    @property
    def input_size(self) -> int:
        return self.width + 1

    @property
    def output_size(self) -> int:
        return self.width

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        self.check_length(length)
        w, T = self.width, 2 * length + 1
        seq = _bits(gen, batch, length, w)
        x = torch.zeros(batch, T, w + 1)
        x[:, :length, :w] = seq
        x[:, length, w] = 1.0  # delimiter
        y = torch.zeros(batch, T, w)
        y[:, length + 1 :] = seq
        mask = torch.zeros(batch, T)
        mask[:, length + 1 :] = 1.0
        return Batch(x, y, mask, length)


@dataclass
class RepeatCopyTask(AlgorithmicTask):
    name: ClassVar[str] = "repeat_copy"
    width: int = 8
    min_repeats: int = 1
    max_repeats: int = 10
    min_len: int = 1
    max_len: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_repeats > self.max_repeats:
            raise ValueError(f"repeat_copy: need min_repeats <= max_repeats, got {self.min_repeats} > "
                             f"{self.max_repeats}.")

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width + 1

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        self.check_length(length)
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
        return Batch(x, y, mask, length)


@dataclass
class AssociativeRecallTask(AlgorithmicTask):
    name: ClassVar[str] = "associative_recall"
    shortest: ClassVar[int] = 2  # a query needs an item after it
    width: int = 6
    item_len: int = 3
    min_len: int = 2
    max_len: int = 6

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        self.check_length(length)
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
        return Batch(x, y, mask, length)


@dataclass
class PrioritySortTask(AlgorithmicTask):
    name: ClassVar[str] = "priority_sort"
    width: int = 8
    n_out: int = 16
    min_len: int = 20
    max_len: int = 20

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width

    def sample(self, batch: int, length: int, gen: torch.Generator) -> Batch:
        self.check_length(length)
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
        return Batch(x, y, mask, length)


@dataclass
class NGramTask(AlgorithmicTask):
    name: ClassVar[str] = "ngrams"
    order: int = 6  # n: the next bit depends on the previous n - 1 bits
    min_len: int = 200
    max_len: int = 200

    @property
    def shortest(self) -> int:  # type: ignore[override]
        return self.order + 1

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
        self.check_length(length)
        bits, _ = self._bits_and_contexts(batch, length, gen)
        mask = torch.ones(batch, length)
        mask[:, : self.order - 2] = 0.0  # targets before a full context exists are coin flips
        return Batch(bits[:, :-1, None], bits[:, 1:, None], mask, length)

    def optimal_bits(self, batch: int, length: int, gen: torch.Generator) -> float:
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
        return float(total.mean())


TASKS: dict[str, type[AlgorithmicTask]] = {
    cls.name: cls for cls in (CopyTask, RepeatCopyTask, AssociativeRecallTask, PrioritySortTask, NGramTask)
}


def make_task(name: str, **kwargs: Any) -> AlgorithmicTask:
    """The task registered as ``name`` with ``kwargs`` over its defaults.

    Raises:
        ValueError: unknown name, unknown keyword (both listed with the valid choices), or
            invalid values (e.g. ``min_len > max_len``).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}.")
    cls = TASKS[name]
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"task {name!r} has no options {unknown}; it takes {known}.")
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# data sets


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of parts (``("train", seed, index)``): independent streams."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TrainingBatches(Dataset):
    """Item ``i`` is batch ``i`` of the training stream: a length drawn uniformly from the task's
    training lengths, then ``batch_size`` sequences, all from a generator seeded by ``(seed, i)``."""

    def __init__(self, task: AlgorithmicTask, batch_size: int, seed: int) -> None:
        self.task, self.batch_size, self.seed = task, batch_size, seed

    def __getitem__(self, index: int) -> Batch:
        gen = torch.Generator().manual_seed(stream_seed("train", self.seed, index))
        length = int(torch.randint(self.task.min_len, self.task.max_len + 1, (1,), generator=gen))
        return self.task.sample(self.batch_size, length, gen)


class BatchIndexSampler(DistributedSampler):
    """Process ``rank`` (of ``R``) yields the batch indices ``k R + rank`` for ``k = start,
    start + 1, ...``, ``batches_per_epoch`` of them per epoch: one stream that continues across
    epochs and is split between processes.

    ``start`` is the number of batches this process has already trained on (0, or the restored
    step of a resumed run), so a resumed run continues the stream exactly where the checkpoint
    left it. A ``DistributedSampler``, so Lightning keeps it under DDP (its ``set_epoch`` is not
    needed: the stream position is the sampler's own).
    """

    def __init__(self, batches_per_epoch: int, start: int = 0) -> None:  # noqa: D107 - no data set length to split
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = torch.distributed.get_world_size() if distributed else 1
        self.rank = torch.distributed.get_rank() if distributed else 0
        self.batches_per_epoch, self.next, self.epoch = batches_per_epoch, start, 0

    def __iter__(self) -> Iterator[int]:
        for _ in range(self.batches_per_epoch):
            index, self.next = self.next, self.next + 1
            yield index * self.num_replicas + self.rank

    def __len__(self) -> int:
        return self.batches_per_epoch


class EveryIndexSampler(DistributedSampler):
    """Every index of a data set, in order, in every process: each DDP process evaluates the
    whole (small) evaluation set, so every per-length metric exists on every rank."""

    def __init__(self, dataset: Dataset) -> None:  # noqa: D107 - no super().__init__: nothing to split
        self.size, self.epoch = len(dataset), 0  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.size))

    def __len__(self) -> int:
        return self.size


class EvaluationBatches(Dataset):
    """One fixed batch of ``batch_size`` fresh sequences per length in ``lengths``, drawn from
    ``(stream, seed, length)``: the same sequences at every evaluation of a run."""

    def __init__(self, task: AlgorithmicTask, lengths: Sequence[int], batch_size: int, seed: int, stream: str) -> None:
        for length in lengths:
            task.check_length(length)
        self.task, self.lengths, self.batch_size, self.seed, self.stream = task, list(lengths), batch_size, seed, stream

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> Batch:
        length = self.lengths[index]
        gen = torch.Generator().manual_seed(stream_seed(self.stream, self.seed, length))
        return self.task.sample(self.batch_size, length, gen)


class AlgorithmicDataModule(L.LightningDataModule):
    """Training batches and evaluation sets of an :class:`AlgorithmicTask`.

    An *epoch* is ``batches_per_epoch`` training batches; validation runs on the evaluation set
    after every epoch and the test stage on a second one (other fresh sequences).

    Args:
        task: the task (its training lengths included).
        batch_size: sequences per training batch (per process under DDP).
        batches_per_epoch: training batches between two evaluations (and checkpoints).
        eval_batch: sequences per evaluated length.
        eval_lengths: generalisation lengths evaluated beside the training lengths (e.g. ``[40, 80]``).
        seed: seed of every stream (training, validation, test).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        task: AlgorithmicTask,
        batch_size: int = 16,
        batches_per_epoch: int = 250,
        eval_batch: int = 32,
        eval_lengths: Sequence[int] = (),
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        for key, value in (("batch_size", batch_size), ("batches_per_epoch", batches_per_epoch),
                           ("eval_batch", eval_batch)):
            if value < 1:
                raise ValueError(f"data.{key} must be >= 1, got {value}.")
        overlap = sorted(set(eval_lengths) & set(task.lengths))
        if overlap:
            raise ValueError(f"data.eval_lengths {overlap} are training lengths ({task.min_len}-{task.max_len}), "
                             "which are evaluated anyway: pass lengths outside that range.")
        self.task, self.batch_size, self.batches_per_epoch = task, batch_size, batches_per_epoch
        self.eval_batch, self.eval_lengths = eval_batch, sorted(eval_lengths)
        self.seed, self.num_workers = seed, num_workers
        self._evaluation = {stage: EvaluationBatches(task, task.lengths + self.eval_lengths, eval_batch, seed, stage)
                            for stage in ("val", "test")}

    def _loader(self, dataset: Dataset, sampler: Any = None) -> DataLoader:
        # batch_size=None: every item already is a batch (one length per batch)
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        # Lightning builds this loader after restoring a checkpoint: continue at its step
        trainer = self.trainer
        done = trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else 0
        return self._loader(TrainingBatches(self.task, self.batch_size, self.seed),
                            BatchIndexSampler(self.batches_per_epoch, start=done))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._evaluation["val"], EveryIndexSampler(self._evaluation["val"]))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._evaluation["test"], EveryIndexSampler(self._evaluation["test"]))
