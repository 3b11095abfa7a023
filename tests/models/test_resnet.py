from __future__ import annotations

import pytest
import torch
import torchvision

import qimia.models as qm
from qimia.layers import QIMIA, ResidualStack
from qimia.models.resnet import BottleneckBranch, PadShortcut, TransitionBlock
from qimia.params import count_parameters

TORCHVISION_RESNET50 = 25_557_032


def test_resnet50_has_exactly_torchvisions_parameters_and_qimia_is_within_two_percent():
    reference = count_parameters(torchvision.models.resnet50(weights=None))
    assert reference == TORCHVISION_RESNET50
    ours = count_parameters(qm.create_model("resnet50"))
    qimia = count_parameters(qm.create_model("qimia_resnet50"))
    assert ours == reference
    assert 0 < (qimia - ours) / ours < 0.02


def test_resnet20_is_the_cifar_size_and_qimia_is_within_two_percent():
    ours = count_parameters(qm.create_model("resnet20"))
    qimia = count_parameters(qm.create_model("qimia_resnet20"))
    assert ours == 269_722  # He et al.'s 0.27M
    assert 0 < (qimia - ours) / ours < 0.02


@torch.no_grad()
def test_post_add_relu_with_torchvision_weights_computes_torchvisions_resnet50():
    tv = torchvision.models.resnet50(weights=None)
    for m in tv.modules():  # non-trivial BatchNorm statistics, so a wrong mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
    tv.eval()
    ours = qm.create_model("resnet50", relu="post_add").eval()
    qm.load_torchvision_resnet(ours, tv.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), tv(x), rtol=1e-4, atol=1e-4)
    # The default placement shares the weights but not the function (the stream is not rectified).
    default = qm.create_model("resnet50").eval()
    qm.load_torchvision_resnet(default, tv.state_dict())
    assert not torch.allclose(default(x), tv(x), atol=1e-3)


def test_same_branch_modules_in_both_versions():
    res, qim = qm.create_model("resnet50"), qm.create_model("qimia_resnet50")
    for a, b in zip(res.stages, qim.stages):
        assert isinstance(a.mixer, ResidualStack) and isinstance(b.mixer, QIMIA)
        assert isinstance(a.transition, TransitionBlock) and isinstance(b.transition, TransitionBlock)
        assert [type(m) for m in a.mixer.blocks] == [type(m) for m in b.mixer.blocks] == [BottleneckBranch] * len(a.mixer.blocks)
    assert [s.mixer.depth for s in res.stages] == [2, 3, 5, 2]  # [3, 4, 6, 3] minus the transitions


def test_resnet20_first_stage_has_no_transition_and_padding_shortcuts_elsewhere():
    model = qm.create_model("qimia_resnet20")
    assert model.stages[0].transition is None and model.stages[0].mixer.depth == 3
    for stage in model.stages[1:]:
        assert isinstance(stage.transition.shortcut, PadShortcut) and stage.mixer.depth == 2


def test_pad_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 4, 8, 8)
    y = PadShortcut(4, 8, 2)(x)
    assert y.shape == (2, 8, 4, 4)
    torch.testing.assert_close(y[:, :4], x[:, :, ::2, ::2])
    assert (y[:, 4:] == 0).all()


def test_post_add_relu_needs_the_residual_mixer():
    with pytest.raises(ValueError, match="post_add"):
        qm.create_model("qimia_resnet20", relu="post_add")


@pytest.mark.parametrize("granularity", ["layer", "component"])
def test_cross_stage_memory_reads_earlier_stages_with_gradients(granularity):
    model = qm.create_model("qimia_resnet20", width=4, cross_stage=True, granularity=granularity)
    x = model.example_input(2)
    maps = model.depth_attention(x)
    # stage 0 writes 4 slots (stem output + 3 branches), stage 1 reads them plus its own 3.
    assert maps["stages.0.mixer"].shape == (4, 4)
    assert maps["stages.1.mixer"].shape == (3, 4 + 3)
    assert maps["stages.2.mixer"].shape == (3, 4 + 3 + 3)
    assert maps["stages.2.mixer"][:, :7].sum() > 0  # the earlier stages are attended to
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        if "cross" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_cross_stage_needs_qimia():
    with pytest.raises(ValueError, match="cross_stage"):
        qm.create_model("resnet20", cross_stage=True)


def test_load_torchvision_rejects_a_mismatched_state_dict():
    model = qm.create_model("resnet50", width=32)
    with pytest.raises(ValueError, match="does not fit"):
        qm.load_torchvision_resnet(model, torchvision.models.resnet50(weights=None).state_dict())


def test_bad_input_is_a_clear_error():
    model = qm.create_model("resnet20", width=4)
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(2, 1, 32, 32))
