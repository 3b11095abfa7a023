from __future__ import annotations

import json

import pytest
import torch

from qimia.memory.cli import main, parse_overrides
from qimia.memory.train import TrainConfig, load_checkpoint, train


def small(tmp_path, **kw):
    base = dict(steps=4, batch_size=4, eval_every=2, eval_batch=4, max_len=3, controller_size=16, memory_slots=8,
                word_size=6, hidden_size=16, progress=False, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("model,task", [("ntm", "copy"), ("dnc", "associative_recall"), ("lstm", "repeat_copy"),
                                        ("ntm", "priority_sort"), ("lstm", "ngrams")])
def test_train_runs_and_writes_artefacts(tmp_path, model, task):
    max_len = {"priority_sort": 6, "ngrams": 10}.get(task, 3)
    h = train(small(tmp_path, model=model, task=task, min_len=max_len - 1, max_len=max_len, eval_lengths=[max_len + 1]))
    assert len(h["eval"]) == 2 and str(max_len + 1) in h["generalisation"]
    assert ("optimal_bits" in h) == (task == "ngrams")
    for name in ("checkpoint.pt", "curve.png", "history.json"):
        assert (tmp_path / "run" / name).exists()


def test_resume_continues_exactly(tmp_path):
    full = train(small(tmp_path / "a", steps=4))
    train(small(tmp_path / "b", steps=2))
    resumed = train(small(tmp_path / "b", steps=4, resume=str(tmp_path / "b" / "run" / "checkpoint.pt")))
    assert [e["step"] for e in resumed["eval"]] == [2, 4]
    assert resumed["eval"][-1]["bits"] == pytest.approx(full["eval"][-1]["bits"], rel=1e-4)


def test_resume_rejects_mismatch_and_corrupt_file(tmp_path):
    train(small(tmp_path, steps=2))
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match="memory_slots"):
        train(small(tmp_path, steps=4, memory_slots=9, resume=ckpt))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        load_checkpoint(bad)


def test_ntm_learns_short_copy(tmp_path):
    torch.manual_seed(0)
    h = train(small(tmp_path, steps=300, eval_every=150, batch_size=16, min_len=1, max_len=2, lr=3e-3,
                    controller_size=32, threads=0))
    # chance: 8 bits per output vector, half of them wrong; lengths 1-2 -> 6 wrong bits per sequence
    assert h["eval"][-1]["wrong_bits"] < 3.0
    assert h["eval"][-1]["bits"] < 0.6 * 12.0


def test_config_errors():
    with pytest.raises(ValueError, match="unsupported optimizer"):
        TrainConfig(optimizer="sgdd")
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="gpt")
    with pytest.raises(ValueError, match="valid keys"):
        parse_overrides(["stepz=3"], TrainConfig)
    cfg = parse_overrides(["steps=3", "--batch-size", "2", "eval_lengths=40,80", "progress=false"], TrainConfig)
    assert (cfg.steps, cfg.batch_size, cfg.eval_lengths, cfg.progress) == (3, 2, [40, 80], False)


def test_cli_train_and_unknown_key(tmp_path, capsys):
    assert main(["train", "steps=2", "eval_every=1", "batch_size=2", "max_len=2", "controller_size=8",
                 "memory_slots=4", "word_size=4", "progress=false", f"out={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["final_eval"]["step"] == 2
    assert main(["train", "bogus=1"]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["nope"]) == 2


@pytest.mark.parametrize("kw,match", [
    (dict(eval_every=0), "eval_every must be >= 1"),  # was a ZeroDivisionError after step 1
    (dict(steps=0), "steps must be >= 1"),
    (dict(batch_size=-1), "batch_size must be >= 1"),
    (dict(eval_batch=0), "eval_batch must be >= 1"),
    (dict(memory_slots=0), "memory_slots must be >= 1"),
    (dict(read_heads=0), "read_heads must be >= 1"),
    (dict(min_len=-2), "min_len must be >= 0"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(clip_grad=-1.0), "clip_grad must be >= 0"),
    (dict(eval_lengths=[40, 0]), "eval_lengths must all be >= 1"),
    (dict(controller="gru"), "unknown controller"),
])
def test_config_rejects_non_positive_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_cli_rejects_eval_every_zero(tmp_path, capsys):
    assert main(["train", "eval_every=0", "steps=2", "progress=false", f"out={tmp_path / 'run'}"]) == 2
    assert "eval_every must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
