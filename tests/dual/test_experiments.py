"""The dual-form experiments (``qimia.dual.experiments``) on the one training engine: every
experiment config trains one batch; the two Table 1 recipes (this project's, the official code's);
a trained network is rebuilt from its run folder with the same predictions; budgets, inputs and
optimizers without a dual form are refused clearly."""

from __future__ import annotations

import gzip
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from qimia.app import compose
from qimia.cli import main
from qimia.data.image_tasks import load_task
from qimia.data.mnist import load_mnist_pkl
from qimia.data.text import CharTokenizer, WordTokenizer
from qimia.dual.experiments.common import accuracy, check_budget, check_not_resumed
from qimia.dual.experiments.mnist import run as mnist_run
from qimia.dual.experiments.multitask import check_schedule, group_shares
from qimia.dual.reconstruct import reconstruct_layer
from qimia.dual.store import DualStore
from qimia.training.dual import load_net

QUIET = ["threads=1", "trainer.enable_progress_bar=false", "logger=[]"]
CORPUS = "the cat sat on the mat. the dog sat on the log. " * 20


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    splits = tuple((rng.random((48, 784), dtype=np.float32), rng.integers(0, 10, 48)) for _ in range(3))
    with gzip.open(root / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f)
    (root / "corpus.txt").write_text(CORPUS)
    return {"mnist": root / "mnist.pkl.gz", "corpus": root / "corpus.txt"}


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory, data) -> dict[str, Path]:
    """Each experiment config trained for one batch (per task), its store kept."""
    root = tmp_path_factory.mktemp("one_batch")
    mlp = ["model.hidden=[8]", "data.batch_size=8", "analysis.test_subset=4", "record.keep_stores=true"]
    overrides = {
        "mnist": [*mlp, "seeds=[0]", f"data.path={data['mnist']}", "trainer.max_steps=1", "analysis.figures=0"],
        "mnist_official": [*mlp, "recipe=official", "seeds=[0,1]", f"data.path={data['mnist']}", "trainer.max_steps=2",
                           "analysis.test_subset=0", "analysis.figures=0"],
        "multitask": [*mlp, "data.task=digits", "data.steps_per_task=1"],
        "continual": [*mlp, f"data.path={data['mnist']}", "data.steps_per_task=1"],
        "lm": ["corpus=text_file", f"corpus.path={data['corpus']}", "trainer.max_steps=1", "data.seq_len=8",
               "data.batch_size=2", "model.hidden=8", "model.embed=4", "analysis.prompts=[the d]",
               "record.keep_stores=true"],
        "lm_word": ["tokens=word", "corpus=text_file", f"corpus.path={data['corpus']}", "corpus.val_fraction=0.07",
                    "trainer.max_steps=2",  # (0.07: the two held-out splits differ in characters per word)
                    "data.seq_len=6", "data.batch_size=2", "model.hidden=8", "model.embed=4", "data.vocab_size=8",
                    "analysis.prompts=[the cat sat]", "analysis.test_queries=2", "analysis.query_len=5",
                    "record.keep_stores=true", "record.dtype=float32"],  # the preset stores fp16
    }
    folders = {}
    for command, extra in overrides.items():
        folders[command] = root / command
        assert main(["dual", command.split("_")[0], *extra, *QUIET, f"hydra.run.dir={folders[command]}"]) == 0, command
    return folders


@pytest.mark.parametrize("command", ["mnist", "multitask", "continual", "lm", "lm_word"])
def test_every_experiment_config_trains_one_batch(one_batch, command):
    run = one_batch[command] / "seed0" if command == "mnist" else one_batch[command]
    store = DualStore.open(run / "store", verify="full")
    assert store.num_steps == (2 if command in ("multitask", "continual", "lm_word") else 1)
    assert (run / "checkpoints" / "last.ckpt").exists() and (one_batch[command] / "results.json").is_file()


def test_the_recipes_are_this_projects_and_the_official_codes():
    settings = lambda cfg: (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.trainer.max_steps,  # noqa: E731
                            cfg.trainer.gradient_clip_val, cfg.data.standardize, cfg.data.batch_size)
    project, official = compose("dual/mnist"), compose("dual/mnist", ["recipe=official"])
    assert settings(project) == (0.1, 0.0, 3000, None, False, 128) and project.name == "mnist_mlp"
    assert settings(official) == (3e-3, 0.9, 5000, 1.0, True, 128) and "official" in official.name
    assert project.analysis.test_subset == official.analysis.test_subset == 0             # the whole test set
    assert compose("dual/mnist", ["recipe=official", "optimizer.lr=0.5"]).optimizer.lr == 0.5  # the command line wins
    assert "momentum" not in compose("dual/mnist", ["recipe=official", "optimizer=adamw"]).optimizer  # no SGD keys merged


def test_official_recipe_scores_the_whole_test_set_over_its_seeds(one_batch, data):
    out = one_batch["mnist_official"]
    res = json.loads((out / "results.json").read_text())
    (xtr, _), (xte, _) = load_task("mnist", data["mnist"])
    assert res["n_test"] == res["test_set_size"] == len(xte) and [s["seed"] for s in res["seeds"]] == [0, 1]
    for seed in res["seeds"]:
        assert seed["steps"] == 2
        row = seed["table1"]["contribution"]["layer0"]
        assert row["n_right"] + row["n_wrong"] == len(xte)
    setup = res["setup"]
    assert (setup["momentum"], setup["lr"], setup["gradient_clip_val"], setup["standardize"]) == (0.9, 3e-3, 1.0, True)
    mean, std = res["input_mean_std"]
    assert mean == pytest.approx(float(xtr.double().mean())) and std == pytest.approx(float(xtr.double().std()))
    report = (out / "report.md").read_text()
    assert "Table 1 on the full test set" in report and "standardised" in report and "gradient clipping 1.0" in report


def test_a_run_keeps_the_seeds_its_folder_holds_and_refuses_another_setup(one_batch, data, tmp_path, capsys):
    out = tmp_path / "official"  # the two-seed run's results, then seed 2 added in its folder
    out.mkdir()
    (out / "results.json").write_bytes((one_batch["mnist_official"] / "results.json").read_bytes())
    base = ["model.hidden=[8]", "data.batch_size=8", "recipe=official", f"data.path={data['mnist']}",
            "trainer.max_steps=2", "analysis.test_subset=0", "analysis.figures=0", *QUIET, f"hydra.run.dir={out}"]
    before = json.loads((out / "results.json").read_text())["seeds"]
    assert main(["dual", "mnist", "seeds=[0,1,2]", *base]) == 0
    assert "already holds seeds [0, 1]: kept, not trained again" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert [s["seed"] for s in res["seeds"]] == [0, 1, 2] and res["seeds"][:2] == before
    assert not (out / "seed1").exists() and (out / "seed2").is_dir()  # seeds 0 and 1 were not trained again
    assert "Seeds [2] added by `" in (out / "report.md").read_text()
    assert main(["dual", "mnist", "seeds=[3]", *base, "optimizer.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "holds seeds [0, 1, 2] of another setup" in err and "'lr': (0.003, 0.5)" in err
    assert [s["seed"] for s in json.loads((out / "results.json").read_text())["seeds"]] == [0, 1, 2]


def test_group_shares_summarise_class_task_groups():
    ids = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])                                # (class, task)
    frac = np.array([[0.5, 0.1, 0.3, 0.1], [0.1, 0.2, 0.1, 0.6]])                  # (M=2, G=4)
    out = group_shares(frac, ids, targets=np.array([0, 1]), task=0)
    assert out["share_task0"] == pytest.approx([0.45, 0.15]) and out["share_task1"] == pytest.approx([0.55, 0.15])
    assert out["share_groups"] == pytest.approx({"0,0": 0.3, "1,0": 0.15, "0,1": 0.2, "1,1": 0.35})
    assert (out["argmax_target_own_task"], out["argmax_own_task"], out["argmax_target_class"]) == (50.0, 50.0, 100.0)


def test_mnist_checkpoint_round_trip(one_batch, data):
    run = one_batch["mnist"] / "seed0"
    net = load_net(run)
    (_, _), (xte, yte) = load_task("mnist", data["mnist"])
    results = json.loads((one_batch["mnist"] / "results.json").read_text())
    assert accuracy(net, xte, yte) == results["seeds"][0]["test_acc"]
    store = DualStore.open(run / "store")
    final = store.load_checkpoint()["model"]                       # the recorder's copy of the last step
    for name in store.layer_names:
        W, b = reconstruct_layer(store, name)
        layer = net.get_submodule(name.removeprefix("net."))
        assert torch.equal(layer.weight, final[f"{name}.weight"])
        assert float((W - layer.weight.double()).norm() / layer.weight.double().norm()) <= 1e-5
    x = load_mnist_pkl(data["mnist"])[2][0][:5]
    with torch.no_grad():
        assert torch.equal(net(x), load_net(run)(x))


def test_lm_checkpoint_round_trip(one_batch):
    run = one_batch["lm"]
    net = load_net(run)
    report = json.loads((run / "results.json").read_text())
    tokenizer = CharTokenizer(CORPUS[: int(len(CORPUS) * 0.9)])  # corpus=text_file trains on its first 90%
    assert net.embed.num_embeddings == tokenizer.vocab_size == report["vocab"]
    with torch.no_grad():
        logits = net(tokenizer.encode("the d")[None])
    assert tokenizer.decode([int(logits[0, -1].argmax())]) == report["prompts"][0]["predicted_next"]


def test_word_lm_on_nn_lstm_is_recorded_exactly_and_explains_test_queries(one_batch, data, helpers):
    run = one_batch["lm_word"]
    report = json.loads((run / "results.json").read_text())
    assert report["slots"] == {"lstm.ih_l0": 2 * 2 * 6, "lstm.hh_l0": 2 * 2 * 6, "out": 2 * 2 * 6}
    store, net = DualStore.open(run / "store"), load_net(run)
    assert isinstance(net.lstm, torch.nn.LSTM) and net.embed.num_embeddings == report["vocab"] == 8
    params = dict(net.named_parameters())
    for name in store.layer_names:                    # net.lstm.ih_l0 -> lstm.weight_ih_l0, ...
        spec = store.layer(name)
        W, b = reconstruct_layer(store, name)
        assert helpers.rel_err(W, params[spec.weight.removeprefix("net.")]) <= 1e-5, name
        assert helpers.rel_err(b, params[spec.bias.removeprefix("net.")]) <= 1e-5, name
    assert [p["kind"] for p in report["prompts"]] == ["prompt", "test query", "test query"]
    assert all(len(p["prompt"].split()) == 5 for p in report["prompts"][1:])        # query_len words each
    for split in ("val", "test"):  # each split's bpc from its own characters per token
        held = report["held_out"][split]
        assert held["ppl"] > 1 and held["bigram_ppl"] > 1 and held["tokens"] > 0
        assert held["bpc"] == pytest.approx(math.log2(held["ppl"]) * held["tokens"] / held["chars"], rel=1e-4)
    tokens = len(WordTokenizer.PATTERN.findall(CORPUS[: len(CORPUS) - int(len(CORPUS) * 0.07) - int(len(CORPUS) * 0.05)]))
    top = report["prompts"][0]["layers"]["lstm.hh_l0"]["contribution"]["top"]
    assert report["corpus_tokens"] == tokens and all(0 <= t["corpus_pos"] < tokens and "[" in t["context"] for t in top)
    assert "| test |" in (run / "report.md").read_text()


def test_record_layers_chooses_the_recorded_modules(tmp_path, data):
    out = tmp_path / "lm"
    assert main(["dual", "lm", "tokens=word", "corpus=text_file", f"corpus.path={data['corpus']}", "trainer.max_steps=1",
                 "data.seq_len=6", "data.batch_size=2", "model.hidden=4", "model.embed=2", "analysis.prompts=[the]",
                 "analysis.test_queries=0",
                 "record.layers=[net.lstm]", *QUIET, f"hydra.run.dir={out}"]) == 0
    assert set(json.loads((out / "results.json").read_text())["slots"]) == {"lstm.ih_l0", "lstm.hh_l0"}


def test_report_only_rewrites_the_report_from_results_json(one_batch, tmp_path, capsys):
    out = one_batch["mnist"]
    written = (out / "report.md").read_text()
    (out / "report.md").write_text("stale")
    assert main(["dual", "mnist", "report_only=true", f"hydra.run.dir={out}"]) == 0
    assert (out / "report.md").read_text() == written
    capsys.readouterr()
    assert main(["dual", "mnist", "report_only=true", f"hydra.run.dir={tmp_path}"]) == 2
    assert "results.json does not exist" in capsys.readouterr().err


def test_a_budget_without_steps_fails_clearly_and_writes_no_report(tmp_path, capsys):
    assert main(["dual", "mnist", "data.task=digits", "trainer.max_steps=-5", *QUIET, f"hydra.run.dir={tmp_path}"]) == 2
    assert "trains no step" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize(("config", "overrides", "check", "message"), [
    ("mnist", ["trainer.max_steps=0"], check_budget, "trains no step"),
    ("lm", ["trainer.max_steps=-1", "trainer.max_epochs=0"], check_budget, "trains no step"),
    ("multitask", ["trainer.max_epochs=3"], check_schedule, "set data.steps_per_task instead"),
    ("continual", ["data.steps_per_task=0"], check_schedule, "data.steps_per_task=<N >= 1>"),
    ("mnist", ["ckpt_path=last"], check_not_resumed, "cannot continue from a Lightning checkpoint"),
    ("mnist", ["seeds=[]"], lambda cfg: mnist_run(cfg, Path(".")), "seeds=[] trains nothing"),
])
def test_budgets_and_resumes_without_a_recording_are_refused(config, overrides, check, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check(compose(f"dual/{config}", overrides))


def test_an_epoch_without_steps_is_refused_after_fit(tmp_path, capsys):
    """``trainer.limit_train_batches=0`` passes the budget check but takes no step: ``fit`` refuses it, no report."""
    assert main(["dual", "mnist", "data.task=digits", "model.hidden=[4]", "trainer.max_steps=2",
                 "trainer.limit_train_batches=0", *QUIET, f"hydra.run.dir={tmp_path}"]) == 2
    assert "nothing was trained" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer=adamw"], "UnsupportedOptimizerError"),
    (["trainer.gradient_clip_val=1", "+trainer.gradient_clip_algorithm=value"], "has no exact dual form"),
])
def test_optimizers_without_a_dual_form_are_refused(overrides, message, tmp_path, capsys):
    base = ["data.task=digits", "model.hidden=[4]", "data.batch_size=8", "trainer.max_steps=1"]
    assert main(["dual", "mnist", *base, *overrides, *QUIET, f"hydra.run.dir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err


def test_lm_refuses_binary_data_and_unknown_prompt_characters(tmp_path, capsys):
    tiny = ["trainer.max_steps=1", "data.seq_len=8", "data.batch_size=2", "model.hidden=4", "model.embed=2", *QUIET]
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 8)
    assert main(["dual", "lm", "corpus=text_file", f"corpus.path={junk}", *tiny, f"hydra.run.dir={tmp_path / 'a'}"]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    control = tmp_path / "control.txt"
    control.write_text("".join(chr(i % 32) for i in range(4000)))
    assert main(["dual", "lm", "corpus=text_file", f"corpus.path={control}", *tiny, f"hydra.run.dir={tmp_path / 'b'}"]) == 2
    assert "looks like binary data" in capsys.readouterr().err
    text = tmp_path / "corpus.txt"
    text.write_text(CORPUS)
    assert main(["dual", "lm", "corpus=text_file", f"corpus.path={text}", "analysis.prompts=[XYZ]", *tiny,
                 f"hydra.run.dir={tmp_path / 'c'}"]) == 2
    assert "do not occur in the training corpus" in capsys.readouterr().err


def test_configs_name_their_data_by_the_path_convention():
    for command in ("mnist", "multitask", "continual"):
        cfg = compose(f"dual/{command}")
        assert cfg.data.path == f"{cfg.paths.data}/mnist.pkl.gz"
    assert compose("dual/mnist").seeds == [0, 1, 2, 3, 4]                    # Table 1 over 5 seeds by default
    assert compose("dual/continual").mode == "continual" and compose("dual/multitask").mode == "joint"
