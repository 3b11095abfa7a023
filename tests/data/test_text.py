import math

import pytest
import torch

from qimia.data import BPETokenizer, CharTokenizer, PythonDocs, TextDataModule, TextFile, WikiText, WordTokenizer
from qimia.data.text import PG19, TokenWindows

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * i}\n" for i in range(400))


def test_char_tokenizer_roundtrip_and_unknown():
    tok = CharTokenizer("abcab")
    assert tok.decode(tok.encode("cab").tolist()) == "cab"
    assert tok.encode("z").tolist() == [0]  # unseen -> UNK
    assert tok.vocab_size == 4


def test_char_tokenizer_names_the_characters_it_does_not_know():
    assert CharTokenizer("abcab").unknown("cazby") == ["y", "z"]


def test_word_tokenizer_keeps_the_most_frequent_words_and_maps_the_rest_to_unk():
    tok = WordTokenizer("the cat sat on the mat, the cat.", vocab_size=4)
    assert tok.vocab[1:] == ["the", "cat", "sat"]                               # ties: the first seen first
    ids = tok.encode("the cat sat on the mat")
    assert tok.decode(ids.tolist()) == "the cat sat \u2047 the \u2047"          # on, mat -> UNK
    assert tok.unknown("the dog sat, on") == [",", "dog", "on"]
    with pytest.raises(ValueError, match="at least 2 entries"):
        WordTokenizer("the cat", vocab_size=1)


def test_bpe_trained_locally_compresses_and_roundtrips():
    tok = BPETokenizer(TEXT, vocab_size=300)
    ids = tok.encode(TEXT[:500])
    assert tok.decode(ids.tolist()) == TEXT[:500]
    assert len(ids) < 500 / 2  # merges learned on this text: more than 2 characters per token
    assert tok.vocab_size <= 300


def test_token_windows():
    ds = TokenWindows(torch.arange(21), block_size=5)
    assert len(ds) == 4
    x, y = ds[1]
    assert x.tolist() == [5, 6, 7, 8, 9] and y.tolist() == [6, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="shorter than one window"):
        TokenWindows(torch.arange(3), block_size=5)


@pytest.mark.parametrize("tokenizer", ["char", "word", "bpe"])
def test_text_file_module(tmp_path, tokenizer):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    dm = TextDataModule(TextFile(str(path), 0.1, 0.1), tokenizer=tokenizer, vocab_size=300, block_size=16, batch_size=4)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert dm.net_kwargs["block_size"] == 16
    cpt = dm.task_kwargs["chars_per_token"]
    if tokenizer == "char":
        assert dm.net_kwargs["vocab_size"] == len(set(TEXT[: int(len(TEXT) * 0.8)])) + 1
        assert cpt == 1.0
    else:
        test_text = TextFile(str(path), 0.1, 0.1).load().test
        assert math.isclose(cpt, len(test_text) / len(dm.tokenizer.encode(test_text)))
        assert cpt > 2


def test_wikitext_local_folder(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.raw").write_text(TEXT)
    corpus = WikiText(path=str(tmp_path)).load()
    assert corpus.train == corpus.test == TEXT
    with pytest.raises(FileNotFoundError, match="wiki.train"):
        WikiText(path=str(tmp_path / "nowhere")).load()


def test_pg19_reads_the_books_of_each_split_in_order(tmp_path):
    for split, books in (("train", ["b2", "a1", "c3"]), ("validation", ["v"]), ("test", ["t"])):
        (tmp_path / split).mkdir()
        for book in books:
            (tmp_path / split / f"{book}.txt").write_text(f"<{split} {book}>")
    corpus = PG19(str(tmp_path)).load()
    assert corpus.train == "<train a1>\n\n<train b2>\n\n<train c3>" and corpus.test == "<test t>"
    assert PG19(str(tmp_path), max_books=2).load().train == "<train a1>\n\n<train b2>"
    with pytest.raises(FileNotFoundError, match="gsutil"):
        PG19(str(tmp_path / "nowhere")).load()
    (tmp_path / "test" / "t.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test"):
        PG19(str(tmp_path)).load()


def test_python_docs_is_a_real_corpus():
    corpus = PythonDocs().load()
    assert len(corpus.train) > 300_000 and "the" in corpus.test


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        TextFile(str(tmp_path / "missing.txt")).load()
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="UTF-8"):
        TextFile(str(tmp_path / "bin.txt")).load()
    with pytest.raises(ValueError, match="tokenizer"):
        TextDataModule(PythonDocs(), tokenizer="words")
