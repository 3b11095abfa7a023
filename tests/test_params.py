from __future__ import annotations

import pytest
from torch import nn

from qimia.params import count_parameters, match_parameters


def test_count_parameters_counts_shared_modules_once():
    layer = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(layer, layer)) == 20
    layer.bias.requires_grad_(False)
    assert count_parameters(layer, trainable_only=True) == 16


def test_match_parameters_finds_the_nearest_width():
    def build(width: int) -> nn.Module:
        return nn.Sequential(nn.Linear(10, width), nn.Linear(width, 10))

    target = count_parameters(build(37)) + 5  # between widths 37 and 38, nearer 37
    result = match_parameters(build, target, low=1, high=200)
    assert result.value == 37
    assert result.params == count_parameters(build(37))
    assert abs(result.relative_gap) < 0.01
    assert "width=37" in str(result)


def test_match_parameters_rejects_an_empty_range():
    with pytest.raises(ValueError, match="empty search range"):
        match_parameters(lambda w: nn.Linear(w, w), 10, low=5, high=1)
