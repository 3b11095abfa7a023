"""The registry of the classic models and its configs (``conf/memory/model``)."""

from __future__ import annotations

import pytest
import torch
import yaml

from qimia.app import config_dir, group_options
from qimia.memory import DNC, NTM, LSTMBaseline, create_memory_model, list_memory_models, memory_model_defaults


def test_registry_builds_every_model_by_name():
    assert list_memory_models() == ["dnc", "lstm", "ntm"]
    for name, cls in (("ntm", NTM), ("dnc", DNC), ("lstm", LSTMBaseline)):
        model = create_memory_model(name, input_size=5, output_size=3)
        assert type(model) is cls
        assert model(torch.zeros(2, 4, 5))[0].shape == (2, 4, 3)
    assert create_memory_model("ntm", memory_slots=16).config.memory_slots == 16


def test_registry_refuses_unknown_names_and_options():
    with pytest.raises(ValueError, match=r"unknown memory model 'gpt'; registered: \['dnc', 'lstm', 'ntm'\]"):
        create_memory_model("gpt")
    with pytest.raises(TypeError, match=r"unknown options \['memory_slots'\]"):
        create_memory_model("lstm", memory_slots=4)


@pytest.mark.parametrize("name", list_memory_models())
def test_each_model_config_states_the_models_own_defaults(name):
    """Every knob of the model is in its config file, with the model's default; the channel
    sizes come from the task."""
    assert group_options("model", "memory") == list_memory_models()
    packaged = yaml.safe_load((config_dir("memory") / "model" / f"{name}.yaml").read_text())
    defaults = memory_model_defaults(name)
    del defaults["input_size"], defaults["output_size"]
    assert packaged == {"name": name, **defaults}
