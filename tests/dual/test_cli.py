"""The ``qimia dual`` command line: every sub-command has --help; the experiments run end to end (tiny)."""

from __future__ import annotations

import json

import pytest

from qimia.dual.cli import main


@pytest.mark.parametrize("command", ["mnist", "multitask", "lm", "verify"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out


def test_mnist_digits_end_to_end_and_verify(tmp_path, capsys):
    out, stores = tmp_path / "out", tmp_path / "stores"
    assert main(["mnist", "--data", "digits", "--hidden", "16", "16", "--steps", "20", "--batch-size", "16",
                 "--seeds", "0", "--test-subset", "30", "--figures", "1", "--store-dir", str(stores),
                 "--out", str(out), "--keep-stores", "--no-progress"]) == 0
    res = json.loads((out / "table1.json").read_text())
    assert len(res["seeds"]) == 1 and set(res["aggregate"]) == {"contribution", "key"}
    assert (out / "example_contribution_0.png").exists() and (out / "example_key_0.png").exists()
    assert "APPROXIMATE" in (out / "table1.md").read_text()
    written = (out / "table1.md").read_text()
    (out / "table1.md").write_text("stale")
    assert main(["mnist", "--report-only", "--out", str(out)]) == 0               # from table1.json alone
    assert (out / "table1.md").read_text() == written
    capsys.readouterr()
    assert main(["mnist", "--report-only", "--out", str(tmp_path / "nothing")]) == 2
    assert "table1.json does not exist" in capsys.readouterr().err
    assert main(["verify", str(stores / "seed0")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 20
    assert all(v["rel_err_W"] <= 1e-5 for v in report["layers"].values())


@pytest.mark.parametrize("mode", ["continual", "joint"])
def test_multitask_digits(tmp_path, mode):
    assert main(["multitask", "--mode", mode, "--data", "digits", "--hidden", "16", "--steps-per-task", "15",
                 "--batch-size", "16", "--test-subset", "10", "--store-dir", str(tmp_path / "s"),
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "o" / f"{mode}.json").read_text())
    assert res["acc_reconstructed_all_slots"] == pytest.approx(res["acc_final"], abs=0.2)
    shares = res["attention_shares"]["contribution"]["test_task0"]["layer0"]
    assert shares["share_task0"][0] + shares["share_task1"][0] == pytest.approx(1.0, abs=1e-5)
    assert res["slots_per_task"] == {"0": 15 * 16, "1": 15 * 16}


def test_lm_on_local_text(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log. " * 40)
    assert main(["lm", "--text", str(text), "--steps", "4", "--seq-len", "16", "--batch-size", "4",
                 "--hidden", "16", "--embed", "8", "--prompt", "the c", "--store-dir", str(tmp_path / "s"),
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    rep = json.loads((tmp_path / "o" / "lm_report.json").read_text())
    layers = rep["prompts"][0]["layers"]
    assert set(layers) == {"cell", "out"}
    top = layers["cell"]["contribution"]["top"]
    assert len(top) == 3 and all(0 <= t["corpus_pos"] < len(text.read_text()) for t in top)
    assert sum(layers["out"]["key"]["position_share"]) == pytest.approx(1.0)
    assert rep["slots"] == {"cell": 4 * 4 * 16, "out": 4 * 4 * 16}
    assert main(["lm", "--text", str(text), "--steps", "1", "--seq-len", "16", "--batch-size", "2", "--hidden", "8",
                 "--embed", "4", "--prompt", "XYZ", "--store-dir", str(tmp_path / "s2"), "--out", str(tmp_path / "o2"),
                 "--no-progress"]) == 2
    assert "do not occur" in capsys.readouterr().err


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert "no dual-form store" in capsys.readouterr().err


def test_mnist_config_has_no_unused_fields():
    from dataclasses import fields

    from qimia.dual.experiments.mnist import MnistConfig

    assert "extra" not in {f.name for f in fields(MnistConfig)}
    with pytest.raises(TypeError, match="extra"):
        MnistConfig(extra={"x": 1})
    assert {f.name for f in fields(MnistConfig)} >= {"steps", "lr", "seeds"}
