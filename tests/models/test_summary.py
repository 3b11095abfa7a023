"""``qimia summary`` (:mod:`qimia.models.summary`): the parameter tables and the CLI."""

from __future__ import annotations

from qimia.cli import main
from qimia.models.registry import model_defaults
from qimia.models.summary import matched_table, parameter_table


def test_parameter_table_reports_counts_and_gaps_to_the_reference():
    table = parameter_table(["resnet20", "qimia_resnet20"])
    assert "| `resnet20` | classification | residual | 269,722 |" in table
    assert "+1.07% vs `resnet20`" in table


def test_matched_table_keeps_the_pairs_whose_candidate_matches():
    table = matched_table("*resnet20")
    assert "| `resnet20` | `qimia_resnet20` | width=16 |" in table and "transformer_lm" not in table


def test_summary_prints_and_writes_the_tables_of_the_models_a_pattern_matches(tmp_path, capsys):
    assert main(["summary", "pattern=*resnet20", "matched=true", f"hydra.run.dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "qimia_resnet20" in out and "resnet50" not in out and "width=16" in out
    assert (tmp_path / "summary.md").read_text() == out


def test_a_pattern_that_matches_nothing_is_a_clean_error(tmp_path, capsys):
    assert main(["summary", "pattern=*nothing*", f"hydra.run.dir={tmp_path}"]) == 2
    assert "matches no model" in capsys.readouterr().err


def test_a_typo_names_the_nearest_key(capsys):
    assert main(["summary", "patern=x"]) == 2
    assert "did you mean pattern" in capsys.readouterr().err


def test_a_wrong_type_names_the_key(capsys):
    assert main(["summary", "matched=abc"]) == 2
    assert "matched='abc': expected bool" in capsys.readouterr().err


def test_cfg_job_prints_the_config(capsys):
    assert main(["summary", "--cfg", "job"]) == 0
    assert "matched: false" in capsys.readouterr().out


def test_a_two_seed_sweep_makes_two_run_folders(tmp_path):
    assert main(["summary", "-m", "seed=0,1", "pattern=resnet20", f"hydra.sweep.dir={tmp_path}"]) == 0
    assert all("`resnet20`" in (tmp_path / job / "summary.md").read_text() for job in ("0", "1"))


def test_model_defaults_include_the_kwargs_a_name_fixes():
    assert model_defaults("qimia_resnet20")["mixer"] == "qimia"
    assert model_defaults("resnet20")["mixer"] == "residual"
    assert model_defaults("linear_probe")["depth"] == 0
