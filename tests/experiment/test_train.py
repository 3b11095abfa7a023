import csv

import lightning as L
import pytest
import torch

from functools import partial

from qimia.app import compose
from qimia.experiment.train import final_state, load_run, run_training

compose_config = partial(compose, "models/train")

FAST = ["tiny=true", "threads=1", "trainer.deterministic=true", "trainer.enable_progress_bar=false"]


class Crash(L.Callback):
    """Kill the run in the middle of an epoch (after the first epoch's checkpoint)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    common = [*FAST, "trainer.max_epochs=3", "data.batch_size=128"]  # 9 steps per epoch
    full: dict = {}
    uninterrupted = run_training(compose_config(common), tmp_path / "full", keep=full)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(compose_config(common), tmp_path / "part", callbacks=[Crash(at_step=13)])
    assert (tmp_path / "part" / "checkpoints" / "last.ckpt").exists()
    resumed_parts: dict = {}
    resumed = run_training(compose_config([*common, "ckpt_path=last"]), tmp_path / "part", keep=resumed_parts)
    assert resumed_parts["trainer"].global_step == full["trainer"].global_step == 27
    a, b = final_state(full["net"]), final_state(resumed_parts["net"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test == uninterrupted.test
    assert resumed.history["val"] == uninterrupted.history["val"]  # learning curve restored too


def test_outputs_logs_and_config(tmp_path):
    result = run_training(compose_config([*FAST, "trainer.max_epochs=1"]), tmp_path)
    assert (tmp_path / "config.yaml").exists()
    assert (tmp_path / "csv" / "metrics.csv").exists()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents*"))
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert set(result.test) == {"test/loss", "test/acc"} and result.monitor == "acc"
    assert result.throughput > 0 and result.unit == "samples"
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)  # plain tensors and scalars
    assert "net" not in ckpt["hyper_parameters"] and ckpt["hyper_parameters"]["num_classes"] == 10


def test_bf16_mixed_switch(tmp_path):
    result = run_training(compose_config([*FAST, "trainer.fast_dev_run=true", "trainer.precision=bf16-mixed",
                                          "logger=[]"]), tmp_path)
    assert result.test["test/loss"] > 0


def test_compile_switch_wraps_the_network():
    from qimia.experiment.build import build_datamodule, build_net, build_task

    cfg = compose_config([*FAST, "compile=true"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    net = build_net(cfg, datamodule)
    module = build_task(cfg, net, datamodule)
    assert isinstance(module._forward, torch._dynamo.eval_frame.OptimizedModule)  # trained in tests/training
    assert module.net is net  # checkpoints hold the plain network's weights


@pytest.mark.parametrize("scheduler", ["none", "onecycle", "warmup_cosine"])
def test_scheduler_options(tmp_path, scheduler):
    keep: dict = {}
    run_training(compose_config([*FAST, f"scheduler={scheduler}", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                                 "logger=[]", "test=false"]), tmp_path, keep=keep)
    configs = keep["trainer"].lr_scheduler_configs
    assert (len(configs) == 0) == (scheduler == "none")


def test_a_trained_network_is_rebuilt_from_its_run_folder(tmp_path):
    keep: dict = {}
    run_training(compose_config([*FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=3", "logger=[]"]),
                 tmp_path, keep=keep)
    images = next(iter(keep["datamodule"].test_dataloader()))[0]
    trained = keep["net"].eval()
    rebuilt = load_run(tmp_path)
    assert type(rebuilt) is type(trained) and not rebuilt.training
    with torch.no_grad():
        assert torch.equal(rebuilt(images), trained(images))


def test_rebuilding_needs_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="net.yaml"):
        load_run(tmp_path)


class Counter(L.Callback):
    """A user callback, given on the command line as ``+trainer.callbacks=[{_target_: ...}]``."""

    calls = 0

    def on_train_batch_end(self, *args) -> None:
        Counter.calls += 1


def test_user_callbacks_from_the_config_are_called(tmp_path):
    Counter.calls = 0
    cfg = compose_config([*FAST, "trainer.max_steps=3", "trainer.max_epochs=1", "logger=[]", "test=false",
                          f"+trainer.callbacks=[{{_target_: {__name__}.Counter}}]"])
    run_training(cfg, tmp_path)
    assert Counter.calls == 3


def test_a_resumed_run_keeps_its_csv_history(tmp_path):
    common = [*FAST, "trainer.max_epochs=3", "data.batch_size=128", "logger=csv", "trainer.log_every_n_steps=1"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(compose_config(common), tmp_path, callbacks=[Crash(at_step=13)])
    run_training(compose_config([*common, "ckpt_path=last"]), tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    epochs = sorted({int(r["epoch"]) for r in rows if r.get("train/loss_epoch")})
    assert epochs == [0, 1, 2]  # the epoch before the crash is still there
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert len(steps) == len(set(steps)) == 27  # every step once: the rows logged after the checkpoint are not doubled
    assert steps == list(range(27))  # at the steps an uninterrupted run logs them (none shifted by the resume)
    assert [int(r["step"]) for r in rows if r.get("val/loss")] == [8, 17, 26]  # each epoch's last step


def test_hyperparameters_reach_the_loggers(tmp_path):
    run_training(compose_config([*FAST, "trainer.max_steps=1", "trainer.max_epochs=1", "logger=tensorboard",
                                 "test=false"]), tmp_path)
    hparams = (tmp_path / "tensorboard" / "hparams.yaml").read_text()
    assert "optimizer" in hparams and "lr: 0.002" in hparams


def test_resuming_with_another_model_is_refused(tmp_path):
    run_training(compose_config([*FAST, "trainer.max_steps=2", "trainer.max_epochs=1", "logger=[]", "test=false"]),
                 tmp_path)
    with pytest.raises(ValueError, match=r"different config \(model.width: 16 -> 12"):
        run_training(compose_config([*FAST, "trainer.max_steps=4", "trainer.max_epochs=1", "logger=[]", "test=false",
                                     "ckpt_path=last", "model.width=12"]), tmp_path)
    # a longer budget is what resuming is for
    run_training(compose_config([*FAST, "trainer.max_steps=4", "trainer.max_epochs=1", "logger=[]", "test=false",
                                 "ckpt_path=last"]), tmp_path)
