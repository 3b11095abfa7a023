from __future__ import annotations

import pytest

from qimia.attention.jacobian_cli import JacobianConfig
from qimia.memory.cli import main, parse_overrides


@pytest.mark.parametrize("kw,match", [
    (dict(seq_len=30), "seq_len only applies to kind=rnn"),
    (dict(lag=3), "lag only applies to kind=rnn"),
    (dict(seq_len=30, lag=3), "seq_len, lag only apply to kind=rnn"),
])
def test_classifier_rejects_rnn_only_options(kw, match):
    with pytest.raises(ValueError, match=match):
        JacobianConfig(kind="classifier", **kw)


def test_rnn_defaults_and_lag_check():
    cfg = JacobianConfig(kind="rnn")
    assert (cfg.seq_len, cfg.lag) == (20, 5)
    assert JacobianConfig(kind="classifier").seq_len is None  # no silently ignored value
    with pytest.raises(ValueError, match="0 <= lag < seq_len"):
        JacobianConfig(kind="rnn", seq_len=5, lag=5)


def test_cli_parses_optional_ints_and_reports_ignored_options(capsys):
    cfg = parse_overrides(["kind=rnn", "seq_len=12", "lag=3"], JacobianConfig)
    assert (cfg.seq_len, cfg.lag) == (12, 3)
    assert main(["jacobian", "kind=classifier", "lag=3"]) == 2
    assert "lag only applies to kind=rnn" in capsys.readouterr().err
