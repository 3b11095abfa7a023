"""``qimia memory ram / ut / jacobian`` end to end, on tiny sizes: a good run, a typo, a wrong
type, ``--cfg job``, a 2-seed sweep, every experiment config for one batch, and the checkpoint
round trip (rebuild from the run folder, same predictions)."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from qimia.app import compose, group_options
from qimia.attention.cli import load_trained
from qimia.cli import main

QUIET = ["threads=1", "trainer.enable_progress_bar=false", "logger=[csv]"]
TINY = {
    "ram": ["ram_experiment=digits", "net.glimpse_hidden=8", "net.glimpse_size=8", "net.hidden=8", "net.glimpses=2",
            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "figure_images=2"],
    "ut": ["models=[ut_act,transformer]", "data.steps=4", "data.batch_size=4", "data.eval_batches=1",
           "trainer.val_check_interval=2", "net.d_model=8", "net.num_heads=2", "net.d_ff=8", "net.max_steps=2",
           "net.layers=2"],
    "jacobian": ["data.steps=3", "data.seq_len=6", "data.lag=2", "data.eval_batches=1", "net.hidden=4",
                 "figure_inputs=2"],
}
RESULTS = {"ram": ["results.json", "curve.png", "glimpses.png", "checkpoints/last.ckpt", "checkpoints/best.ckpt"],
           "ut": ["results.json", "results.md", "curve.png", "ut_act/seed0/checkpoints/last.ckpt",
                  "transformer/seed0/config.yaml"],
           "jacobian": ["results.json", "sequential_jacobian.png", "checkpoints/last.ckpt", "config.yaml"]}


def run(command: str, *overrides: str) -> int:
    return main(["memory", command, *QUIET, *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One good tiny run of each command."""
    root = tmp_path_factory.mktemp("runs")
    for command, overrides in TINY.items():
        assert run(command, *overrides, f"hydra.run.dir={root / command}") == 0
    return {command: root / command for command in TINY}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A stand-in mnist.pkl.gz (64 / 32 / 32 random images)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((k, 784), dtype=np.float32), rng.integers(0, 10, k)) for k in (64, 32, 32))
    with gzip.open(root / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f)
    return root


@pytest.mark.parametrize("command", list(TINY))
def test_good_run_writes_results_and_checkpoints(runs, command):
    folder = runs[command]
    missing = [name for name in RESULTS[command] if not (folder / name).exists()]
    assert not missing
    results = json.loads((folder / "results.json").read_text())
    if command == "ram":
        assert 0.0 <= results["test"]["test/error"] <= 1.0 and results["parameters"] > 0
        assert [row["epoch"] for row in results["curve"]] == [1] and "val/error" in results["curve"][0]
        assert results["test_checkpoint"] == "best"
    elif command == "ut":
        summary = results["summary"]
        assert set(summary) == {"ut_act", "transformer"}
        assert 1 <= summary["ut_act"]["in_range_ponder_steps"]["mean"] <= 2
        assert summary["transformer"]["in_range_ponder_steps"]["mean"] == 2
        assert summary["transformer"]["parameters"] > summary["ut_act"]["parameters"]  # untied layers
        assert [c["step"] for c in results["runs"][0]["curve"]] == [2, 4]
    else:
        assert results["test"]["test/loss"] > 0 and results["expected"] == 6 - 1 - 2
        assert 0 <= results["argmax_input_for_last_output"] < 6


@pytest.mark.parametrize("command,typo,near", [
    ("ram", "net.glimpsez=3", "net.glimpses"), ("ut", "tua=0.1", "tau"), ("jacobian", "figure_input=3", "figure_inputs"),
])
def test_typo_names_the_nearest_key(capsys, command, typo, near):
    assert run(command, typo) == 2
    assert f"did you mean {near}?" in capsys.readouterr().err


@pytest.mark.parametrize("command,wrong,key", [
    ("ram", "net.glimpses=many", "net.glimpses"), ("ut", "seeds=two", "seeds"), ("jacobian", "data.lag=abc", "data.lag"),
])
def test_wrong_type_names_the_key(capsys, command, wrong, key):
    assert run(command, wrong) == 2
    err = capsys.readouterr().err
    assert f"{key}=" in err and "expected int" in err


@pytest.mark.parametrize("command", list(TINY))
def test_cfg_job_prints_the_config_and_runs_nothing(capsys, tmp_path, command):
    assert run(command, "--cfg", "job", f"hydra.run.dir={tmp_path}") == 0
    out = capsys.readouterr().out
    assert "net:" in out and "data:" in out and "optimizer:" in out
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("command", list(TINY))
def test_two_seed_sweep_makes_two_run_folders(tmp_path, command):
    one_model = ["models=[ut_act]"] if command == "ut" else []
    assert run(command, "-m", "seed=0,1", *TINY[command], *one_model, f"hydra.sweep.dir={tmp_path}") == 0
    for job in ("0", "1"):
        assert (tmp_path / job / "results.json").is_file()
    first, second = (json.loads((tmp_path / job / "results.json").read_text()) for job in ("0", "1"))
    assert first != second  # different seeds, different runs


@pytest.mark.parametrize("command,experiment", [
    (command, option) for command in TINY for option in group_options(f"{command}_experiment", "memory")
])
def test_every_experiment_config_trains_one_batch(tmp_path, data_dir, command, experiment):
    small = {"translated_mnist": ["data.canvas=40"], "translated_mnist_reference": ["data.canvas=40"],
             "rnn": ["net.hidden=4"], "classifier": ["net.hidden=4"]}
    tiny = [o for o in TINY[command] if o.startswith("net.")] if command != "jacobian" else []
    assert run(command, f"{command}_experiment={experiment}", *tiny, *small.get(experiment, []),
               f"paths.data={data_dir}", "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path}") == 0
    assert (tmp_path / "results.json").is_file()


def _prediction(command: str, net: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        if command == "ram":
            images = torch.rand(3, 1, 8, 8)
            state = net.initial_state(images, torch.Generator().manual_seed(0))
            return net(images, sample=False, state=state)[0]
        if command == "ut":
            return net(torch.randint(1, 10, (3, 5)))[0]
        return net(torch.randn(3, 6, 1))


@pytest.mark.parametrize("command,folder", [("ram", ""), ("ut", "ut_act/seed0"), ("jacobian", "")])
def test_checkpoint_round_trip_gives_the_same_predictions(runs, command, folder):
    from hydra.utils import instantiate

    from qimia.attention.cli import BUILDERS

    run_dir = runs[command] / folder
    net = load_trained(run_dir, command)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    fresh = BUILDERS[command](cfg, instantiate(cfg.data)).eval()  # same architecture, untrained weights
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    trained = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.state_dict().items())  # training changed weights
    fresh.load_state_dict(trained)
    torch.testing.assert_close(_prediction(command, net), _prediction(command, fresh), rtol=0, atol=0)
    assert not torch.equal(_prediction(command, net), _prediction(command, BUILDERS[command](cfg, instantiate(cfg.data)).eval()))


def test_ram_resumes_from_last_with_the_whole_curve(tmp_path):
    tiny = [o for o in TINY["ram"] if not o.startswith("trainer.max_epochs")]
    assert run("ram", *tiny, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}") == 0
    assert run("ram", *tiny, "trainer.max_epochs=2", "ckpt_path=last", f"hydra.run.dir={tmp_path}") == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["epoch"] for row in results["curve"]] == [1, 2]


def test_composed_configs_keep_the_recipes():
    ram = compose("memory/ram")
    assert ram.data.path.endswith("/mnist.pkl.gz") and ram.optimizer.lr == 3e-4 and ram.net.glimpses == 6
    translated = compose("memory/ram", ["ram_experiment=translated_mnist"])
    assert translated.data.canvas == 60 and (translated.net.patch, translated.net.scales) == (12, 3)
    reference = {  # kevinzakka/recurrent-visual-attention's config.py and trainer.py
        "net.std": 0.05, "net.location_hidden": 128, "task.mc_samples": 10, "task.reinforce_weight": 0.01,
        "optimizer.lr": 3e-4, "trainer.max_epochs": 200, "scheduler.patience": 20, "scheduler.factor": 0.1,
        "scheduler._target_": "torch.optim.lr_scheduler.ReduceLROnPlateau"}
    for experiment, batch in (("mnist_reference", "data.batch_size"), ("translated_mnist_reference", "data.base.batch_size")):
        cfg = compose("memory/ram", [f"ram_experiment={experiment}"])
        assert {key: OmegaConf.select(cfg, key) for key in reference} == reference, experiment
        assert OmegaConf.select(cfg, batch) == 128
    assert compose("memory/ram", ["ram_experiment=translated_mnist_reference"]).data.canvas == 60
    ut = compose("memory/ut", ["ut_experiment=sort"])
    assert ut.data.task == "sort" and ut.trainer.gradient_clip_val == 1.0 and ut.name == "ut_sort"
    classifier = compose("memory/jacobian", ["jacobian_experiment=classifier"])
    assert classifier.map == "sensitivity" and "lag" not in classifier.data


def test_rnn_only_options_are_rejected_for_the_classifier(capsys):
    assert run("jacobian", "jacobian_experiment=classifier", "data.lag=3") == 2
    assert "data.lag" in capsys.readouterr().err


def test_bad_values_are_reported_before_training(capsys, tmp_path):
    assert run("ut", "data.max_len=6", "data.test_len=6", f"hydra.run.dir={tmp_path}") == 2
    assert "test_len must be > max_len" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
    assert run("ut", "models=[ut_act,rnn]", f"hydra.run.dir={tmp_path}") == 2
    assert "choose a non-empty list" in capsys.readouterr().err
    assert run("ram", "test_checkpoint=first", f"hydra.run.dir={tmp_path}") == 2
    assert "choose best" in capsys.readouterr().err
    assert run("ut", "+net.depth=3", f"hydra.run.dir={tmp_path}") == 2  # added on purpose, but no model takes it
    assert "['depth']" in capsys.readouterr().err
    assert run("ram", "+net.depth=3", f"hydra.run.dir={tmp_path}") == 2
    assert "depth" in capsys.readouterr().err
