"""``qimia dual mnist|multitask|continual|lm|verify`` as Hydra apps: a good run of a tiny config
(files and numbers), a typo, a wrong type, ``--cfg job`` and a 2-seed ``-m`` sweep for each."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from qimia.cli import main

QUIET = ["threads=1", "trainer.enable_progress_bar=false", "logger=[csv]"]
MLP = ["model.hidden=[8]", "data.batch_size=16", "analysis.test_subset=8"]
TINY = {
    "mnist": [*MLP, "seeds=[0]", "trainer.max_steps=3", "analysis.figures=0", "record.keep_stores=true"],
    "multitask": [*MLP, "data.task=digits", "data.steps_per_task=2"],
    "continual": [*MLP, "data.task=digits", "data.steps_per_task=2"],
    "lm": ["trainer.max_steps=2", "data.seq_len=8", "data.batch_size=4", "model.hidden=8", "model.embed=4",
           "analysis.prompts=[the c]"],
}
TYPO = {"mnist": ("trainer.max_step=3", "trainer.max_steps"), "multitask": ("data.steps_per_tsk=2", "data.steps_per_task"),
        "continual": ("analysis.test_subst=3", "analysis.test_subset"), "lm": ("data.seq_lenn=8", "data.seq_len"),
        "verify": ("tolerence=1", "tolerance")}
WRONG_TYPE = {"mnist": "trainer.max_steps=abc", "multitask": "data.steps_per_task=many", "continual": "seed=abc",
              "lm": "data.seq_len=long", "verify": "tolerance=small"}


def write_mnist_pickle(path: Path, n: int = 64) -> Path:
    """A tiny ``mnist.pkl.gz`` in the deeplearning.net layout: three (images (n, 784), labels) splits."""
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for _ in range(3))
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, list[str]]:
    """Every command's tiny overrides, with their own generated data."""
    root = tmp_path_factory.mktemp("data")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. " * 20)
    return {**TINY, "mnist": [*TINY["mnist"], f"data.path={write_mnist_pickle(root / 'mnist.pkl.gz')}"],
            "lm": [*TINY["lm"], "corpus=text_file", f"corpus.path={corpus}"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, inputs) -> dict[str, Path]:
    """One good run of each training command (module-scoped: the other tests read its folder)."""
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    for command, overrides in inputs.items():
        folders[command] = root / command
        figures = ["analysis.figures=1"] if command == "mnist" else []
        assert main(["dual", command, *overrides, *figures, *QUIET, f"hydra.run.dir={folders[command]}"]) == 0, command
    return folders


def test_mnist_run_writes_report_figures_and_a_lightning_run(runs):
    out = runs["mnist"]
    res = json.loads((out / "results.json").read_text())
    assert res["command"].startswith("qimia dual mnist ") and f"hydra.run.dir={out}" in res["command"]
    (seed,) = res["seeds"]
    assert seed["steps"] == 3 and seed["slots_per_layer"] == 3 * 16 and 0 <= seed["test_acc"] <= 100
    assert set(res["aggregate"]) == {"contribution", "key"}
    for layer in ("layer0", "layer1"):
        row = seed["table1"]["key"][layer]
        assert row["n_right"] + row["n_wrong"] == 8 and 0 <= row["target_all"] <= 100
    report = (out / "report.md").read_text()
    assert report.startswith(f"Command: `{res['command']}`") and "APPROXIMATE" in report
    assert (out / "example_contribution_0.png").read_bytes()[:4] == b"\x89PNG"
    assert seed["figures"] == ["example_contribution_0.png", "example_key_0.png"]         # names in the run folder
    assert (out / "example_key_0.png").is_file()
    run = out / "seed0"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "csv" / "metrics.csv").is_file() and (run / "store" / "manifest.json").is_file()


def test_two_task_runs_rebuild_the_final_model_and_split_the_attention(runs):
    for command, mode in (("multitask", "joint"), ("continual", "continual")):
        res = json.loads((runs[command] / "results.json").read_text())
        assert res["setup"]["mode"] == mode and res["command"].startswith(f"qimia dual {command} ")
        assert res["acc_reconstructed_all_slots"] == pytest.approx(res["acc_final"], abs=0.2)
        assert res["slots_per_task"] == {"0": 2 * 16, "1": 2 * 16}
        shares = res["attention_shares"]["contribution"]["test_task0"]["layer0"]
        assert shares["share_task0"][0] + shares["share_task1"][0] == pytest.approx(1.0, abs=1e-5)
        groups = shares["share_groups"]                                       # (class, task) groups of the slots
        assert 2 <= len(groups) <= 20 and sum(groups.values()) == pytest.approx(1.0, abs=1e-5)
        assert {key.split(",")[1] for key in groups} == {"0", "1"}
        assert len(res["figures"]) == 4 and all((runs[command] / f).read_bytes()[:4] == b"\x89PNG" for f in res["figures"])
        assert ("acc_after_task0" in res) == (mode == "continual")
        assert not (runs[command] / "store").exists()                           # record.keep_stores=false
        assert "rebuilt from W0 + task-0 slots only" in (runs[command] / "report.md").read_text()


def test_lm_run_lists_training_passages(runs, inputs):
    rep = json.loads((runs["lm"] / "results.json").read_text())
    corpus_chars = rep["corpus_chars"]
    layers = rep["prompts"][0]["layers"]
    assert set(layers) == {"cell", "out"} and rep["slots"] == {"cell": 2 * 4 * 8, "out": 2 * 4 * 8}
    top = layers["cell"]["contribution"]["top"]
    assert len(top) == 3 and all(0 <= t["corpus_pos"] < corpus_chars for t in top)
    assert sum(layers["out"]["key"]["position_share"]) == pytest.approx(1.0)
    assert rep["loss_first_last"][0] > 0 and "# LSTM LM dual-form report" in (runs["lm"] / "report.md").read_text()


def test_verify_checks_the_kept_store(runs, tmp_path, capsys):
    store = runs["mnist"] / "seed0" / "store"
    assert main(["dual", "verify", f"store={store}", f"hydra.run.dir={tmp_path / 'v'}"]) == 0
    report = json.loads((tmp_path / "v" / "results.json").read_text())
    assert report["ok"] and report["steps"] == 3 and set(report["layers"]) == {"net.1", "net.3"}
    assert all(e["rel_err_weight"] <= 1e-5 and e["rel_err_bias"] <= 1e-5 for e in report["layers"].values())
    capsys.readouterr()
    # a tolerance below the float32 rounding of the trained weights: the command fails, naming the layers
    assert main(["dual", "verify", f"store={store}", "tolerance=1e-30", f"hydra.run.dir={tmp_path / 'w'}"]) == 2
    assert "exceeds the tolerance" in capsys.readouterr().err


def test_verify_errors(tmp_path, capsys):
    assert main(["dual", "verify", f"store={tmp_path / 'missing'}", f"hydra.run.dir={tmp_path / 'a'}"]) == 2
    assert "no dual-form store" in capsys.readouterr().err
    assert main(["dual", "verify", f"hydra.run.dir={tmp_path / 'b'}"]) == 2
    assert "store=<store folder>" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["mnist", "multitask", "continual", "lm", "verify"])
def test_typo_names_the_nearest_key(command, capsys):
    wrong, near = TYPO[command]
    assert main(["dual", command, wrong]) == 2
    assert f"did you mean {near}?" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["mnist", "multitask", "continual", "lm", "verify"])
def test_wrong_type_names_the_key(command, capsys):
    override = WRONG_TYPE[command]
    assert main(["dual", command, override]) == 2
    err = capsys.readouterr().err
    assert override.split("=")[0] in err and "expected" in err


@pytest.mark.parametrize("command", ["mnist", "multitask", "continual", "lm", "verify"])
def test_cfg_job_prints_the_config(command, capsys):
    assert main(["dual", command, "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "name:" in out and ("tolerance:" in out if command == "verify" else "record:" in out)


@pytest.mark.parametrize("command", ["mnist", "multitask", "continual", "lm", "verify"])
def test_two_seed_sweep_gives_two_run_folders(command, inputs, runs, tmp_path):
    overrides = [f"store={runs['mnist'] / 'seed0' / 'store'}"] if command == "verify" else [*inputs[command], *QUIET]
    sweep = "seed=0,1"
    if command == "mnist":  # a run trains every seed of `seeds`: sweep over one-seed lists
        overrides, sweep = [o for o in overrides if not o.startswith("seeds=")], "seeds=[0],[1]"
    assert main(["dual", command, "-m", sweep, *overrides, f"hydra.sweep.dir={tmp_path}"]) == 0
    for job in ("0", "1"):
        assert (tmp_path / job / "results.json").is_file()
    if command == "mnist":  # each job trains its own seed
        assert (tmp_path / "1" / "seed1" / "checkpoints" / "last.ckpt").exists()
