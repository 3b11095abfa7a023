import pytest

from qimia.experiment.cli import compare_main, train_main
from qimia.experiment.config import ConfigError, compose_config, group_options


def test_default_is_the_digits_comparison():
    cfg = compose_config([])
    assert cfg.data._target_ == "qimia.data.DigitsDataModule"
    assert cfg.model.name == "resnet20" and list(cfg.compare.mixers) == ["residual", "qimia"]
    assert cfg.seeds == 3 and cfg.optimizer._partial_ and cfg.scheduler._partial_


def test_groups_exist():
    for group, option in (("model", "transformer_lm"), ("data", "mnist"), ("trainer", "ddp"), ("optimizer", "sgd")):
        assert option in group_options(group)


def test_unknown_key_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"Could not override 'model.widht'(.|\n)*check its spelling"):
        compose_config(["model.widht=3"])
    with pytest.raises(ConfigError, match=r"available model options: \[.*'resnet20'"):
        compose_config(["model=resnet2"])
    with pytest.raises(ConfigError, match="key=value"):
        compose_config(["seeds"])


def test_cli_reports_errors_without_traceback(capsys):
    assert train_main(["trainer.max_epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "qimia train: error" in err and "trainer.max_epoch" in err and "Traceback" not in err
    assert compare_main(["--bogus"]) == 2


def test_cli_help_and_cfg(capsys):
    assert train_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "experiment=" in out and "mnist_resnet" in out
    assert compare_main(["--cfg", "experiment=text_lm", "seeds=2"]) == 0
    out = capsys.readouterr().out
    assert "name: text_lm" in out and "seeds: 2" in out


def test_data_facts_cannot_be_contradicted(tmp_path, capsys):
    code = train_main(["+model.num_classes=3", "tiny=true", f"output_dir={tmp_path}"])
    assert code == 2
    assert "model.num_classes=3 but the data gives num_classes=10" in capsys.readouterr().err


def test_missing_checkpoint(tmp_path, capsys):
    assert train_main([f"ckpt_path={tmp_path}/nope.ckpt", "tiny=true", f"output_dir={tmp_path}"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_optimizer_must_be_partial(tmp_path, capsys):
    assert train_main(["optimizer._partial_=false", "tiny=true", f"output_dir={tmp_path}"]) == 2
    assert "_partial_" in capsys.readouterr().err
