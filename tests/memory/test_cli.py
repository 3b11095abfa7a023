"""``qimia memory``: Hydra semantics, training runs of every model / task / experiment, resume and
the checkpoint round trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from qimia.app import compose, group_options
from qimia.cli import main
from qimia.data.algorithmic import EvaluationBatches
from qimia.memory.experiment import load_run
from qimia.training.base import TaskModule
from qimia.training.engine import optimizer_factory, scheduler_factory
from qimia.training.sequence import sequence_metrics

FAST = ["threads=1", "logger=[csv]", "plots=false", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
        "data.batch_size=2", "data.batches_per_epoch=1", "data.eval_batch=2"]
TINY_MODEL = {
    "ntm": ["model.controller_size=8", "model.memory_slots=6", "model.word_size=4"],
    "dnc": ["model.controller_size=8", "model.memory_slots=6", "model.word_size=4", "model.read_heads=1"],
    "lstm": ["model.hidden_size=8"],
}
TINY_TASK = {  # short training lengths for each task
    "copy": ["task.max_len=3"],
    "repeat_copy": ["task.max_len=2", "task.max_repeats=2"],
    "associative_recall": ["task.max_len=3", "task.item_len=2"],
    "priority_sort": ["task.min_len=4", "task.max_len=4", "task.n_out=3"],
    "ngrams": ["task.order=3", "task.min_len=6", "task.max_len=6"],
}


def tiny(model: str = "ntm", task: str = "copy", *extra: str) -> list[str]:
    return [f"model={model}", f"task={task}", *FAST, *TINY_MODEL[model], *TINY_TASK[task], *extra]


def run(tmp_path: Path, *overrides: str) -> dict:
    assert main(["memory", *overrides, f"hydra.run.dir={tmp_path}"]) == 0
    return json.loads((tmp_path / "results.json").read_text())


def test_good_run_writes_results_checkpoint_logs_and_figures(tmp_path, capsys):
    results = run(tmp_path, *tiny("ntm", "copy", "plots=true", "logger=[csv,tensorboard]", "data.eval_lengths=[5]",
                                  "trainer.max_steps=4", "data.batches_per_epoch=2"))
    assert "[memory] ntm on copy" in capsys.readouterr().out
    for name in ("config.yaml", "checkpoints/last.ckpt", "csv/metrics.csv", "curve.png", "weightings.png",
                 "weightings_len5.png"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tensorboard").iterdir())
    assert (results["steps"], results["sequences"], results["task"], results["model"]) == (4, 8, "copy", "ntm")
    assert [p["step"] for p in results["curve"]] == [2, 4]
    test = results["test"]
    # chance level is 8 wrong bits of 16 per vector: an untrained model is near it, never outside [0, all]
    assert 0 <= test["wrong_bits"] <= 8 * 3 and test["bits"] > 0
    assert 0 <= test["len5"]["wrong_bits"] <= 8 * 5 and test["len5"]["bits"] > test["bits"]
    assert results["parameters"] > 0 and results["optimal_bits"] is None


def test_lstm_has_no_weighting_figure_and_ngrams_report_the_bayes_optimum(tmp_path):
    results = run(tmp_path, *tiny("lstm", "ngrams", "plots=true"))
    assert (tmp_path / "curve.png").is_file() and not (tmp_path / "weightings.png").exists()
    assert 0 < results["optimal_bits"] < 6  # below one bit per scored step


@pytest.mark.parametrize("model,task", [("ntm", "copy"), ("dnc", "associative_recall"), ("lstm", "repeat_copy"),
                                        ("ntm", "priority_sort"), ("dnc", "ngrams"), ("dnc", "repeat_copy")])
def test_every_model_and_task_trains_one_batch(tmp_path, model, task):
    results = run(tmp_path, *tiny(model, task, "trainer.max_steps=1"))
    assert results["steps"] == 1 and torch.isfinite(torch.tensor(results["test"]["bits"]))


@pytest.mark.parametrize("experiment", group_options("experiment", "memory"))
def test_every_experiment_config_trains_one_batch(tmp_path, experiment):
    chosen = compose("memory/train", [f"experiment={experiment}"])  # an experiment may pick its model and task
    results = run(tmp_path, f"experiment={experiment}", *FAST, *TINY_MODEL[chosen.model.name],
                  *TINY_TASK[chosen.task.name], "trainer.max_steps=1", "data.batch_size=1")
    assert results["steps"] == 1


def test_the_dnc_repeat_copy_experiment_is_deepminds_training_demo():
    """google-deepmind/dnc train.py: hidden 64, memory 16 x 16, 4 read heads, clip 20; 4-bit repeat copy of
    1-2 vectors, 1-2 repeats, batch 16; RMSprop lr 1e-4, epsilon 1e-10 (TF: decay 0.9, no momentum), global
    gradient norm clipped to 50."""
    cfg = compose("memory/train", ["experiment=dnc_repeat_copy"])
    optimizer = optimizer_factory(cfg)(params=[torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.RMSprop)
    assert {k: optimizer.defaults[k] for k in ("lr", "eps", "alpha", "momentum")} == {
        "lr": 1e-4, "eps": 1e-10, "alpha": 0.9, "momentum": 0.0}
    m, t = cfg.model, cfg.task
    assert (m.name, m.controller, m.controller_size, m.memory_slots, m.word_size, m.read_heads, m.controller_clip) == (
        "dnc", "lstm", 64, 16, 16, 4, 20.0)
    assert (t.name, t.width, t.min_len, t.max_len, t.min_repeats, t.max_repeats) == ("repeat_copy", 4, 1, 2, 1, 2)
    assert (cfg.data.batch_size, cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (16, 50, "norm")


def test_the_ntm_paper_recipe_is_expressible():
    overrides = ["optimizer=rmsprop", "optimizer.lr=1e-4", "optimizer.momentum=0.9", "optimizer.alpha=0.95",
                 "data.batch_size=1", "trainer.gradient_clip_val=10", "trainer.gradient_clip_algorithm=value"]
    for cfg in (compose("memory/train", overrides), compose("memory/train", ["experiment=ntm_paper"])):
        optimizer = optimizer_factory(cfg)(params=[torch.nn.Parameter(torch.zeros(1))])
        assert isinstance(optimizer, torch.optim.RMSprop)
        assert {k: optimizer.defaults[k] for k in ("lr", "momentum", "alpha")} == {"lr": 1e-4, "momentum": 0.9,
                                                                                   "alpha": 0.95}
        assert (cfg.data.batch_size, cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (1, 10,
                                                                                                             "value")


def test_the_decay_recipe_is_the_paper_recipe_with_a_plateau_decay():
    paper, decay = compose("memory/train", ["experiment=ntm_paper"]), compose("memory/train", ["experiment=ntm_paper_decay"])
    assert decay.optimizer == paper.optimizer and decay.data == paper.data
    assert OmegaConf.to_container(decay.trainer) == OmegaConf.to_container(paper.trainer)
    assert scheduler_factory(paper) is None
    optimizer = optimizer_factory(decay)(params=[torch.nn.Parameter(torch.zeros(1))])
    plateau = scheduler_factory(decay)(optimizer)
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (plateau.factor, plateau.patience) == (0.1, 10)


def test_the_solved_recipe_is_the_paper_recipe_with_one_drop_at_the_copy_bar():
    from qimia.training import ReduceLROnTarget

    paper, solved = compose("memory/train", ["experiment=ntm_paper"]), compose("memory/train", ["experiment=ntm_paper_solved"])
    assert solved.optimizer == paper.optimizer and solved.data == paper.data
    assert OmegaConf.to_container(solved.trainer) == OmegaConf.to_container(paper.trainer)
    optimizer = optimizer_factory(solved)(params=[torch.nn.Parameter(torch.zeros(1))])
    drop = scheduler_factory(solved)(optimizer)
    assert isinstance(drop, ReduceLROnTarget) and (drop.target, drop.factor) == (0.1, 0.1)


def graves_rmsprop_updates(grads: list[float], lr=1e-4, alpha=0.95, momentum=0.9, eps=1e-4) -> list[float]:
    """Graves (2013), eqs. 38-41, written out: the RMSprop the NTM paper cites."""
    n = m = delta = 0.0
    updates = []
    for g in grads:
        n, m = alpha * n + (1 - alpha) * g * g, alpha * m + (1 - alpha) * g
        delta = momentum * delta - lr * g / (n - m * m + eps) ** 0.5
        updates.append(delta)
    return updates


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 10.0])
def test_the_graves_recipe_steps_like_graves_rmsprop_and_not_like_torch_on_a_vanishing_gradient(scale):
    paper = compose("memory/train", ["experiment=ntm_paper"])
    graves = compose("memory/train", ["experiment=ntm_paper_graves"])
    assert graves.data == paper.data and OmegaConf.to_container(graves.trainer) == OmegaConf.to_container(paper.trainer)
    grads = [scale * (1.0 + 0.5 * ((7 * t) % 5) / 4) for t in range(30)]  # positive, varying
    reference = graves_rmsprop_updates(grads)

    def updates(cfg) -> list[float]:
        weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        optimizer, steps = optimizer_factory(cfg)(params=[weight]), []
        for g in grads:
            before = weight.item()
            weight.grad = torch.tensor([g], dtype=torch.float64)
            optimizer.step()
            steps.append(weight.item() - before)
        return steps

    # torch adds its epsilon after the root: sqrt(a) + sqrt(1e-4) is within a factor sqrt(2) of sqrt(a + 1e-4)
    for ours, theirs in zip(updates(graves), reference):
        assert 2 ** -0.5 * 0.999 <= ours / theirs <= 1.001
    if scale == 1e-6:  # a solved task's gradient: Graves' form barely moves, torch's RMSprop takes full steps
        assert abs(reference[-1]) < 1e-3 * 1e-4 * 10
        assert abs(updates(paper)[-1]) > 0.5 * 1e-4 * 10


def test_typo_names_the_nearest_key(capsys):
    assert main(["memory", "model.memory_slot=4"]) == 2
    assert "did you mean model.memory_slots" in capsys.readouterr().err


def test_wrong_type_names_the_key(capsys):
    assert main(["memory", "data.batch_size=abc"]) == 2
    err = capsys.readouterr().err
    assert "data.batch_size='abc'" in err and "expected int" in err


def test_bad_values_are_clear_errors(tmp_path, capsys):
    assert main(["memory", *tiny(), "task.min_len=5", "task.max_len=3", f"hydra.run.dir={tmp_path}"]) == 2
    assert "min_len <= max_len" in capsys.readouterr().err
    assert main(["memory", *tiny(), "model.memory_slots=0", f"hydra.run.dir={tmp_path}"]) == 2
    assert "memory_slots must be >= 1" in capsys.readouterr().err
    for budget in ("trainer.max_steps=0", "trainer.max_steps=-1"):  # nothing to train / no end
        assert main(["memory", *tiny(), budget, f"hydra.run.dir={tmp_path}"]) == 2
        assert "set trainer.max_steps >= 1" in capsys.readouterr().err
    assert main(["memory", "model=gpt"]) == 2
    err = capsys.readouterr().err
    assert "Could not find 'model/gpt'" in err and "dnc\n\tlstm\n\tntm" in err


def test_cfg_job_prints_the_config_and_runs_nothing(tmp_path, capsys):
    assert main(["memory", "--cfg", "job", "model=dnc", "task=repeat_copy", f"hydra.run.dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "name: dnc" in out and "name: repeat_copy" in out and "max_steps: 2000" in out
    assert not (tmp_path / "results.json").exists()


def test_two_seed_sweep_writes_two_run_folders(tmp_path):
    assert main(["memory", "-m", "seed=0,1", *tiny(), f"hydra.sweep.dir={tmp_path}"]) == 0
    first, second = (json.loads((tmp_path / job / "results.json").read_text()) for job in ("0", "1"))
    assert first["test"]["bits"] != second["test"]["bits"]  # another seed, another model and data stream


def test_resume_from_the_lightning_checkpoint_continues_exactly(tmp_path):
    full = run(tmp_path / "full", *tiny("ntm", "copy", "trainer.max_steps=4"))
    run(tmp_path / "part", *tiny("ntm", "copy", "trainer.max_steps=2"))
    resumed = run(tmp_path / "part", *tiny("ntm", "copy", "trainer.max_steps=4", "ckpt_path=last"))
    assert resumed["steps"] == 4
    assert resumed["test"]["bits"] == pytest.approx(full["test"]["bits"], rel=1e-6)


def validation_rows(run_dir: Path) -> list[tuple[int, str]]:
    rows = csv.DictReader(open(run_dir / "csv" / "metrics.csv"))
    return [(int(r["step"]), r["val/bits"]) for r in rows if r.get("val/bits")]


def test_a_run_killed_between_epochs_resumes_with_its_curve_at_the_same_steps(tmp_path, monkeypatch):
    common = tiny("ntm", "copy", "data.batches_per_epoch=2", "trainer.max_steps=8")
    full = run(tmp_path / "full", *common)
    step = TaskModule.training_step

    def killed_after_two_epochs(self, batch, batch_idx):
        if self.trainer.global_step == 4:
            raise RuntimeError("simulated crash")  # after the step-4 checkpoint (the end of epoch 2)
        return step(self, batch, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(TaskModule, "training_step", killed_after_two_epochs)
        assert main(["memory", *common, f"hydra.run.dir={tmp_path / 'part'}"]) != 0
    before = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["FitClock"]
    resumed = run(tmp_path / "part", *common, "ckpt_path=last")
    assert resumed["fit_seconds"] > before["seconds"] > 0  # the time before the kill is counted too
    assert resumed["test"] == full["test"]
    assert validation_rows(tmp_path / "part") == validation_rows(tmp_path / "full")  # same values at the same steps
    assert [s for s, _ in validation_rows(tmp_path / "full")] == [1, 3, 5, 7]


def test_checkpoint_round_trip_rebuilds_the_trained_model(tmp_path):
    results = run(tmp_path, *tiny("dnc", "copy", "data.eval_lengths=[5]"))
    model, task = load_run(tmp_path)
    assert model.config.read_heads == 1 and task.max_len == 3
    test = EvaluationBatches(task, [*task.lengths, 5], batch_size=2, seed=0, stream="test")
    with torch.no_grad():
        bits = [sequence_metrics(model(b.inputs)[0], b.targets, b.mask).bits_per_sequence.item() for b in test]
    assert sum(bits[:-1]) / len(bits[:-1]) == pytest.approx(results["test"]["bits"], rel=1e-5)
    assert bits[-1] == pytest.approx(results["test"]["len5"]["bits"], rel=1e-5)
    with pytest.raises(FileNotFoundError, match="pass the folder of a qimia memory run"):
        load_run(tmp_path / "nothing")


def test_ntm_learns_short_copy(tmp_path):
    results = run(tmp_path, "model=ntm", "task=copy", *FAST, "model.controller_size=32", "model.memory_slots=8",
                  "model.word_size=6", "task.max_len=2", "trainer.max_steps=150", "data.batch_size=16",
                  "data.batches_per_epoch=150", "data.eval_batch=16", "optimizer.lr=1e-2")
    # chance: 8 bits per output vector, half of them wrong; lengths 1-2 -> 6 wrong bits per sequence
    assert results["test"]["wrong_bits"] < 3.0
    assert results["test"]["bits"] < 0.6 * 12.0
