from __future__ import annotations

import pytest

from qimia.experiment.build import build_datamodule, build_net
from functools import partial

from qimia.app import compose

compose_config = partial(compose, "models/train")


def test_a_model_name_that_fixes_the_mixer_is_not_silently_overridden():
    cfg = compose_config(["model.name=qimia_resnet20", "tiny=true"])
    with pytest.raises(ValueError, match="model.mixer='residual' but qimia_resnet20 fixes mixer='qimia'"):
        build_net(cfg, build_datamodule(cfg))
    cfg = compose_config(["model.name=qimia_resnet20", "model.mixer=qimia", "tiny=true"])
    net = build_net(cfg, build_datamodule(cfg))
    assert type(net.stages[0].mixer).__name__ == "QIMIA"


def test_a_model_and_data_of_different_tasks_are_refused_with_both_named():
    cfg = compose_config(["data=denoise_digits", "tiny=true"])
    with pytest.raises(ValueError, match="resnet20 solves 'classification'.*serves task 'denoising'"):
        build_net(cfg, build_datamodule(cfg))
