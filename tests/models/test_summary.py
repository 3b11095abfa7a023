from __future__ import annotations

from qimia.models.registry import model_defaults
from qimia.models.summary import main, parameter_table


def test_parameter_table_reports_counts_and_gaps_to_the_reference():
    table = parameter_table(["resnet20", "qimia_resnet20"])
    assert "| `resnet20` | classification | residual | 269,722 |" in table
    assert "+1.07% vs `resnet20`" in table


def test_summary_cli_filters_by_pattern(capsys):
    main(["--pattern", "*resnet20"])
    out = capsys.readouterr().out
    assert "qimia_resnet20" in out and "resnet50" not in out


def test_model_defaults_include_the_kwargs_a_name_fixes():
    assert model_defaults("qimia_resnet20")["mixer"] == "qimia"
    assert model_defaults("resnet20")["mixer"] == "residual"
    assert model_defaults("linear_probe")["depth"] == 0
