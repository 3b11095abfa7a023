from __future__ import annotations

import json

import pytest
import torch

from qimia.attention.ut_train import UTTrainConfig, sample_sequences, train_ut
from qimia.memory.cli import main


def test_reverse_and_sort_targets():
    src, tgt, mask = sample_sequences("reverse", 4, 2, 6, 10, torch.Generator().manual_seed(0))
    for b in range(4):
        n = int(mask[b].sum())
        assert torch.equal(tgt[b, :n], src[b, :n].flip(0)) and torch.all(tgt[b, n:] == 0)
    src, tgt, mask = sample_sequences("sort", 4, 2, 6, 10, torch.Generator().manual_seed(0))
    for b in range(4):
        n = int(mask[b].sum())
        assert torch.equal(tgt[b, :n], src[b, :n].sort().values)
    with pytest.raises(ValueError, match="unknown task"):
        sample_sequences("add", 1, 1, 2, 5, torch.Generator())


def test_ut_comparison_runs_and_reports(tmp_path):
    res = train_ut(UTTrainConfig(steps=20, batch_size=8, d_model=16, num_heads=2, d_ff=32, max_steps=3, layers=3,
                                 models=["ut_act", "ut", "transformer"], progress=False, out=str(tmp_path)))
    s = res["summary"]
    assert set(s) == {"ut_act", "ut", "transformer"}
    assert 1 <= s["ut_act"]["in_range_ponder_steps"]["mean"] <= 3
    assert s["ut"]["in_range_ponder_steps"]["mean"] == 3 and s["transformer"]["in_range_ponder_steps"]["mean"] == 3
    assert s["transformer"]["parameters"] > s["ut"]["parameters"]  # untied layers
    assert (tmp_path / "results.md").exists() and (tmp_path / "curve.png").exists()


def test_cli_subcommands(tmp_path, capsys):
    assert main(["ut", "steps=2", "batch_size=4", "d_model=8", "num_heads=2", "d_ff=8", "max_steps=2", "layers=2",
                 "progress=false", f"out={tmp_path / 'ut'}"]) == 0
    assert "summary" in json.loads(capsys.readouterr().out)
    assert main(["ram", "data=digits", "epochs=1", "train_limit=64", "patch=4", "scales=1", "hidden=16",
                 "glimpses=2", "progress=false", f"out={tmp_path / 'ram'}"]) == 0
    assert json.loads(capsys.readouterr().out)["test_error"] <= 1.0
    assert main(["jacobian", "kind=rnn", "steps=5", "seq_len=6", "lag=2", f"out={tmp_path / 'jac'}"]) == 0
    assert (tmp_path / "jac" / "sequential_jacobian.png").exists()
    capsys.readouterr()
    assert main(["ram", "glimpsez=3"]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["--help"]) == 0


@pytest.mark.parametrize("kw,match", [
    (dict(max_len=10, test_len=10), "test_len must be > max_len"),  # would crash in the final evaluate()
    (dict(max_len=10, test_len=7), "test_len must be > max_len"),
    (dict(min_len=8, max_len=5, test_len=9), "min_len <= max_len"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(min_len=0), "min_len must be >= 1"),
    (dict(vocab=1), "vocab must be >= 2"),
])
def test_config_rejects_bad_lengths_and_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        UTTrainConfig(**kw)


def test_cli_reports_bad_test_len_before_training(tmp_path, capsys):
    assert main(["ut", "max_len=6", "test_len=6", "progress=false", f"out={tmp_path}"]) == 2
    assert "test_len must be > max_len" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # rejected up front: nothing trained, nothing written
