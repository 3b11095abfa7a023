"""Text corpora for language modelling, tokenised by characters, by words (the most frequent words
and punctuation marks of the training split, WikiText-style) or with a BPE tokenizer trained
locally on the training split (Hugging Face ``tokenizers``).

    TextDataModule(source=TextFile("corpus.txt"), tokenizer="char", block_size=128)
    TextDataModule(source=WikiText("wikitext-2-raw-v1"), tokenizer="bpe", vocab_size=4096)

Each split is one token stream cut into non-overlapping windows of ``block_size + 1`` tokens
(inputs ``w[:-1]``, targets ``w[1:]``). Bits per character are reported exactly for BPE too:
the module passes ``chars_per_token`` of the evaluation splits to the LightningModule.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from qimia.data.base import SplitDataModule

UNK = "\u2047"  # stands for characters never seen in the training split


# ----------------------------------------------------------------------------- sources
@dataclass
class Corpus:
    """Raw text of the three splits."""

    train: str
    val: str
    test: str


class TextSource(Protocol):
    def load(self) -> Corpus: ...


@dataclass
class TextFile:
    """One local UTF-8 text file split contiguously: first ``1 - val - test`` for training, then
    validation, then test (contiguous, so no window straddles two splits).

    Args:
        path: the file.
        val_fraction, test_fraction: shares of the characters held out.
    """

    path: str
    val_fraction: float = 0.05
    test_fraction: float = 0.05

    def load(self) -> Corpus:
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(f"no text file at {path}; pass data.source.path=<file>.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text ({err}).") from err
        n = len(text)
        n_val, n_test = int(n * self.val_fraction), int(n * self.test_fraction)
        if min(n_val, n_test, n - n_val - n_test) < 2:
            raise ValueError(f"{path} has {n} characters: too short to split into train/val/test.")
        cut1, cut2 = n - n_val - n_test, n - n_test
        return Corpus(text[:cut1], text[cut1:cut2], text[cut2:])


@dataclass
class WikiText:
    """WikiText-2 or -103 (raw) from a local folder (``wiki.train.raw``, ``wiki.valid.raw``,
    ``wiki.test.raw``, or the ``.tokens`` files) or Hugging Face ``datasets`` (downloads once).

    Args:
        name: ``"wikitext-2-raw-v1"`` or ``"wikitext-103-raw-v1"`` (or the non-raw variants).
        path: the local folder; ``None`` loads through ``datasets``.
    """

    name: str = "wikitext-2-raw-v1"
    path: str | None = None

    def load(self) -> Corpus:
        if self.path is not None:
            return self._local(Path(self.path))
        try:
            import datasets
        except ImportError as err:
            raise ImportError(
                "WikiText through Hugging Face needs `pip install datasets` (or `pip install qimia[hf]`); "
                "or pass data.source.path=<folder with wiki.train.raw, wiki.valid.raw, wiki.test.raw>."
            ) from err
        try:
            ds = datasets.load_dataset("wikitext", self.name)
        except Exception as err:  # offline, unknown config, ... : say what to do
            raise RuntimeError(
                f"could not load wikitext/{self.name} through Hugging Face datasets ({err}). Offline? "
                "Pass data.source.path=<folder with wiki.train.raw, wiki.valid.raw, wiki.test.raw>."
            ) from err
        return Corpus(*("".join(ds[split]["text"]) for split in ("train", "validation", "test")))

    @staticmethod
    def _local(folder: Path) -> Corpus:
        texts = []
        for split in ("train", "valid", "test"):
            candidates = [folder / f"wiki.{split}.raw", folder / f"wiki.{split}.tokens"]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise FileNotFoundError(f"no wiki.{split}.raw or wiki.{split}.tokens in {folder}.")
            texts.append(found.read_text(encoding="utf-8"))
        return Corpus(*texts)


@dataclass
class PG19:
    """PG-19 (Rae et al. 2020, "Compressive Transformers for Long-Range Sequence Modelling"): books
    from Project Gutenberg published before 1919, as distributed by DeepMind
    (``gs://deepmind-gutenberg``, or Hugging Face ``deepmind/pg19``): a folder with ``train/``,
    ``validation/`` and ``test/`` sub-folders of one UTF-8 ``<book id>.txt`` per book.

    Args:
        path: the folder.
        max_books: read at most this many books per split (in file-name order; ``None``: all
            28,602 training books, ~11 GB of text).
    """

    path: str
    max_books: int | None = None

    def load(self) -> Corpus:
        folder = Path(self.path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"no PG-19 folder at {folder}; download it (gsutil -m cp -r gs://deepmind-gutenberg <folder>) and pass "
                "data.source.path=<folder with train/, validation/, test/>."
            )
        if self.max_books is not None and self.max_books < 1:
            raise ValueError(f"max_books must be >= 1 or null, got {self.max_books}.")
        texts = []
        for split in ("train", "validation", "test"):
            books = sorted((folder / split).glob("*.txt"))[: self.max_books]
            if not books:
                raise FileNotFoundError(f"no <book id>.txt files in {folder / split}: is {folder} the PG-19 folder?")
            texts.append("\n\n".join(book.read_text(encoding="utf-8") for book in books))
        return Corpus(*texts)


@dataclass
class PythonDocs:
    """The Python reference documentation that ships with CPython (``pydoc_data.topics``: about
    465k characters of English prose and code examples), split contiguously like :class:`TextFile`.
    A real corpus that is available offline wherever Python is."""

    val_fraction: float = 0.05
    test_fraction: float = 0.05

    def load(self) -> Corpus:
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[key] for key in sorted(topics))
        n = len(text)
        cut1 = int(n * (1 - self.val_fraction - self.test_fraction))
        cut2 = int(n * (1 - self.test_fraction))
        return Corpus(text[:cut1], text[cut1:cut2], text[cut2:])


# ----------------------------------------------------------------------------- tokenizers
class CharTokenizer:
    """One token per character of the training text, plus ``UNK`` for unseen characters."""

    def __init__(self, text: str) -> None:
        self.vocab = [UNK, *sorted(set(text) - {UNK})]
        self.index = {ch: i for i, ch in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> Tensor:
        return torch.tensor([self.index.get(ch, 0) for ch in text], dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def unknown(self, text: str) -> list[str]:
        """The characters of ``text`` that encode to ``UNK``."""
        return sorted({ch for ch in text if ch not in self.index})


class WordTokenizer:
    """Words and punctuation marks (``\\w+|[^\\w\\s]``) of the training text: the ``vocab_size - 1``
    most frequent ones (ties: the first seen first), plus ``UNK`` for every other word (WikiText's
    ``<unk>`` convention).
    Whitespace is not a token; ``decode`` joins tokens with spaces."""

    PATTERN = re.compile(r"\w+|[^\w\s]")

    def __init__(self, text: str, vocab_size: int) -> None:
        if vocab_size < 2:
            raise ValueError(f"a word vocabulary needs at least 2 entries (UNK and one word), got {vocab_size}.")
        counts = Counter(self.PATTERN.findall(text))
        counts.pop(UNK, None)
        self.vocab = [UNK, *(word for word, _ in counts.most_common(vocab_size - 1))]
        self.index = {word: i for i, word in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> Tensor:
        return torch.tensor([self.index.get(w, 0) for w in self.PATTERN.findall(text)], dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[i] for i in ids)

    def unknown(self, text: str) -> list[str]:
        """The words of ``text`` that encode to ``UNK``."""
        return sorted({w for w in self.PATTERN.findall(text) if w not in self.index})


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained on the training text with ``vocab_size`` tokens."""

    def __init__(self, text: str, vocab_size: int) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        chunk = 1 << 16  # train from an iterator of chunks: no giant single string in Rust
        tokenizer.train_from_iterator((text[i : i + chunk] for i in range(0, len(text), chunk)), trainer)
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> Tensor:
        lines = text.splitlines(keepends=True)
        ids = [i for enc in self.tokenizer.encode_batch(lines) for i in enc.ids]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def unknown(self, text: str) -> list[str]:
        """Nothing: byte-level BPE encodes any text."""
        return []


TOKENIZERS = ("char", "word", "bpe")
Tokenizer = CharTokenizer | WordTokenizer | BPETokenizer


def make_tokenizer(kind: str, text: str, vocab_size: int) -> Tokenizer:
    """The tokenizer ``kind`` (one of :data:`TOKENIZERS`) built on ``text`` (``vocab_size``: words or
    BPE tokens; a character vocabulary is the text's own)."""
    if kind == "char":
        return CharTokenizer(text)
    if kind == "word":
        return WordTokenizer(text, vocab_size)
    if kind == "bpe":
        return BPETokenizer(text, vocab_size)
    raise ValueError(f"tokenizer must be one of {list(TOKENIZERS)}, got {kind!r}.")


# ----------------------------------------------------------------------------- data
class TokenWindows(Dataset):
    """Non-overlapping ``(inputs (T,), targets (T,))`` windows of a token stream."""

    def __init__(self, tokens: Tensor, block_size: int) -> None:
        if len(tokens) < block_size + 1:
            raise ValueError(f"a split of {len(tokens)} tokens is shorter than one window of block_size+1={block_size + 1}.")
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        window = self.tokens[i * self.block_size : (i + 1) * self.block_size + 1]  # (T + 1,)
        return window[:-1], window[1:]


class TextDataModule(SplitDataModule):
    """Language modelling on any :class:`TextSource`.

    Args:
        source: where the text comes from (:class:`TextFile`, :class:`WikiText`).
        tokenizer: ``"char"``, ``"word"`` or ``"bpe"`` (built on the training split).
        vocab_size: word or BPE vocabulary size (ignored for ``"char"``).
        block_size: tokens per training window ``T``.
        **kwargs: ``batch_size``, ``num_workers``, ``seed``.
    """

    task = "language_modeling"

    def __init__(
        self, source: TextSource, tokenizer: str = "char", vocab_size: int = 4096, block_size: int = 128, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {list(TOKENIZERS)}, got {tokenizer!r}.")
        self.source, self.tokenizer_kind = source, tokenizer
        self.max_vocab_size, self.block_size = vocab_size, block_size
        self.tokenizer: Tokenizer | None = None
        self.chars_per_token = 1.0

    @property
    def net_kwargs(self) -> dict[str, Any]:
        if self.tokenizer is None:
            self.setup()
        return {"vocab_size": self.tokenizer.vocab_size, "block_size": self.block_size}

    @property
    def task_kwargs(self) -> dict[str, Any]:
        """``chars_per_token`` of the test split, for exact bits per character."""
        if self.tokenizer is None:
            self.setup()
        return {"chars_per_token": self.chars_per_token}

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        corpus = self.source.load()
        self.tokenizer = make_tokenizer(self.tokenizer_kind, corpus.train, self.max_vocab_size)
        streams = [self.tokenizer.encode(text) for text in (corpus.train, corpus.val, corpus.test)]
        self.train_set, self.val_set, self.test_set = (TokenWindows(s, self.block_size) for s in streams)
        self.chars_per_token = len(corpus.test) / len(streams[2])

