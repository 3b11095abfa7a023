from __future__ import annotations

import pytest
import torch

import qimia.models as qm
from qimia.models.transfer import TransferHead

TINY = qm.tiny_kwargs("qimia_transfer_head")


def bn_stats(model):
    return [b.clone() for n, b in model.named_buffers() if "running_mean" in n]


def test_frozen_base_gets_no_gradient_and_keeps_its_statistics():
    model = qm.create_model("qimia_transfer_head", **TINY).train()
    before = bn_stats(model.base)
    model(model.example_input(4)).sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in model.base.parameters())
    assert not model.base.training
    for a, b in zip(before, bn_stats(model.base)):
        torch.testing.assert_close(a, b)
    assert all(p.grad is not None for p in model.memory.parameters())


def test_fine_tuning_trains_the_base_too():
    model = qm.create_model("qimia_transfer_head", **TINY, freeze_base=False).train()
    model(model.example_input(4)).sum().backward()
    assert model.base.training
    assert all(p.grad is not None for p in model.base.parameters() if p.requires_grad)


def perturbed_logits(name: str, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
    model = qm.create_model(name, **TINY).eval()
    x = model.example_input(3)
    with torch.no_grad():
        features = model.base_features(x)
        changed = list(features)
        changed[slot] = changed[slot] + torch.randn_like(changed[slot])
        return model.classify(features), model.classify(changed)


def test_qimia_head_reads_every_block_of_the_base():
    a, b = perturbed_logits("qimia_transfer_head", slot=0)  # the stem's output, first slot of the base
    assert not torch.allclose(a, b)


def test_concat_control_reads_every_block_without_attention():
    model = qm.create_model("concat_transfer_head", **TINY)
    assert model.mixer.__class__.__name__ == "ResidualStack" and model.memory.keys is None
    a, b = perturbed_logits("concat_transfer_head", slot=0)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", ["transfer_head", "linear_probe"])
def test_standard_recipes_read_only_the_last_layer(name):
    a, b = perturbed_logits(name, slot=0)
    torch.testing.assert_close(a, b)
    a, b = perturbed_logits(name, slot=-1)
    assert not torch.allclose(a, b)


def test_qimia_head_attends_over_base_slots_then_its_own():
    model = qm.create_model("qimia_transfer_head", **TINY)
    maps = model.depth_attention(model.example_input(2))
    assert maps["mixer"].shape == (TINY.get("depth", 2) + 1, model.num_features + TINY.get("depth", 2) + 1)


def test_base_checkpoint_loads_a_lightning_style_state_dict(tmp_path):
    base = qm.create_model("resnet20", width=4).eval()
    path = tmp_path / "base.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in base.state_dict().items()}}, path)
    head = qm.create_model("linear_probe", base="resnet20", base_kwargs={"width": 4}, base_checkpoint=str(path))
    for (name, p), q in zip(base.state_dict().items(), head.base.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


def test_torchvision_base_is_tapped_block_by_block():
    model = qm.create_model("qimia_transfer_head", base="torchvision:resnet18", dim=16, key_dim=4)
    assert model.tap.layers == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert model(model.example_input(2)).shape == (2, 10)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="linear probe"):
        qm.create_model("transfer_head", **TINY, mixer="qimia", depth=0)
    with pytest.raises(ValueError, match="no modules"):
        qm.create_model("transfer_head", **TINY, tap_layers=["nope"])
    with pytest.raises(ValueError, match="tap_layers="):
        TransferHead(torch.nn.Linear(3, 3), torch.zeros(1, 3), num_classes=2)


def test_the_base_stays_usable_alone_and_copies_tap_their_own_base():
    import copy

    model = qm.create_model("qimia_transfer_head", **TINY).eval()
    x = model.example_input(2)
    assert model.base(x).shape == (2, 10)  # no hook left behind
    twin = copy.deepcopy(model)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x))
        for p in twin.base.parameters():
            p.add_(0.1)
        assert not torch.allclose(twin(x), model(x))


def test_in_chans_reaches_a_registry_base():
    model = qm.create_model("qimia_transfer_head", **TINY, in_chans=1)
    assert model.base.in_chans == 1
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_a_corrupt_base_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read the base checkpoint"):
        qm.create_model("linear_probe", base="resnet20", base_kwargs={"width": 4}, base_checkpoint=str(path))


def test_a_frozen_random_base_is_warned_about():
    with pytest.warns(UserWarning, match="base_checkpoint"):
        qm.create_model("linear_probe", **TINY)
