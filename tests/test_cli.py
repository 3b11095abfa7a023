"""The one CLI dialect (``qimia.cli`` + ``qimia.app``): Hydra semantics for every command, checked on
``qimia train`` / ``qimia compare``; each system's own commands are tested beside it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qimia.app import ConfigError, check_overrides, compose, config_dir, group_options
from qimia.cli import COMMANDS, main

TINY = ["tiny=true", "threads=1", "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "logger=csv", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def test_default_is_the_digits_comparison():
    cfg = compose("models/compare")
    assert cfg.data._target_ == "qimia.data.DigitsDataModule"
    assert cfg.model.name == "resnet20" and list(cfg.compare.mixers) == ["residual", "qimia", "dwa", "attnres"]
    assert cfg.seeds == 3 and cfg.optimizer._partial_ and cfg.scheduler._partial_


def test_groups_exist():
    for group, option in (("model", "transformer_lm"), ("data", "mnist"), ("trainer", "ddp"), ("optimizer", "sgd")):
        assert option in group_options(group)


def test_every_command_has_its_config():
    for name, command in COMMANDS.items():
        root, _, config = command.config.rpartition("/")
        assert (config_dir(root) / f"{config}.yaml").is_file(), name


def test_unknown_key_names_the_nearest_key():
    with pytest.raises(ConfigError, match=r"Could not override 'model.widht'(.|\n)*did you mean model.width\?"):
        compose("models/train", ["model.widht=3"])
    with pytest.raises(ConfigError, match=r"Available options in 'model':\s+resnet20"):
        compose("models/train", ["model=resnet2"])
    with pytest.raises(ConfigError, match="key=value"):
        compose("models/train", ["seeds"])


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc': expected int"),
    ("optimizer.lr=fast", "optimizer.lr='fast': expected float"),
    ("seed=abc", "seed='abc': expected int"),
    ("tiny=3", "tiny=3: expected bool"),
    ("trainer.precision=[1]", "lightning.Trainer expects precision"),
])
def test_a_wrong_type_names_the_key_and_the_type(override, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        check_overrides("models/train", [override])


def test_a_sweep_is_checked_at_its_first_value():
    with pytest.raises(ConfigError, match="seed='a': expected int"):
        check_overrides("models/train", ["seed=a,b"])
    assert check_overrides("models/train", ["seed=0,1"]).seed == 0


def test_errors_print_without_traceback(capsys):
    assert main(["train", "trainer.max_epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "qimia train: error" in err and "did you mean trainer.max_epochs" in err and "Traceback" not in err
    assert main(["train", "trainer.max_epochs=abc"]) == 2
    assert "trainer.max_epochs" in capsys.readouterr().err
    assert main(["nonsense"]) == 2 and "unknown command" in capsys.readouterr().err


def test_help_and_cfg_job(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "experiment: " in out and "mnist_resnet" in out and "memory" not in out.split("== Config ==")[0]
    assert main(["compare", "--cfg", "job", "experiment=text_lm", "seeds=2"]) == 0
    out = capsys.readouterr().out
    assert "name: text_lm" in out and "seeds: 2" in out and "hydra:" not in out


def test_help_does_not_import_lightning():
    code = "import sys; from qimia.cli import main; main(['train', '--help']); print('lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_a_good_run_writes_its_folder(tmp_path, capsys):
    assert main(["train", *TINY, f"hydra.run.dir={tmp_path}"]) == 0
    assert "[train]" in capsys.readouterr().out
    for name in (".hydra/config.yaml", "config.yaml", "net.yaml", "checkpoints/last.ckpt", "csv/metrics.csv"):
        assert (tmp_path / name).is_file(), name


def test_multirun_sweep_gives_one_folder_per_job(tmp_path):
    assert main(["train", *TINY, "-m", "seed=0,1", f"hydra.sweep.dir={tmp_path}"]) == 0
    for job in ("0", "1"):
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
        assert f"seed: {job}" in (tmp_path / job / "config.yaml").read_text()


def test_data_facts_cannot_be_contradicted(tmp_path, capsys):
    assert main(["train", "+model.num_classes=3", *TINY, f"hydra.run.dir={tmp_path}"]) == 2
    assert "model.num_classes=3 but the data gives num_classes=10" in capsys.readouterr().err


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["train", f"ckpt_path={tmp_path}/nope.ckpt", *TINY, f"hydra.run.dir={tmp_path}"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_optimizer_must_be_partial(tmp_path, capsys):
    assert main(["train", "optimizer._partial_=false", *TINY, f"hydra.run.dir={tmp_path}"]) == 2
    assert "_partial_" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.max_epochs=-2", "max_epochs` must be a non-negative integer"),
    ("trainer.max_epochs=0", "nothing was trained"),
])
def test_bad_budgets_are_clear_errors(tmp_path, capsys, override, expected):
    args = [a for a in TINY if not a.startswith("trainer.max_")]
    assert main(["train", *args, override, "scheduler=none", f"hydra.run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_junk_checkpoint_is_refused(tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x80\x04not a checkpoint")
    assert main(["train", f"ckpt_path={junk}", *TINY, f"hydra.run.dir={tmp_path}"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
