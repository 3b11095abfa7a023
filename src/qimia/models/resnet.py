"""ResNets whose skip connections are a depth mixer: ``resnet50``/``qimia_resnet50`` (torchvision's
Bottleneck ResNet-50) and the CIFAR ``resnet20``/``qimia_resnet20`` (He et al., 2016, Sec. 4.2).

Structure (identical for every mixer; only the container around the branches changes)::

    stem -> stage_1 -> ... -> stage_S -> global average pool -> fc
    stage_s:  x_0 = transition(x)                     # full residual block; changes width/stride
              out = mixer([branch_2, ..., branch_n])(x_0).output
              x   = ReLU(out)

* **Branches** are torchvision's blocks without the skip add and without the final ReLU:
  ``Bottleneck``: conv1x1-bn-relu-conv3x3-bn-relu-conv1x1-bn (expansion 4); ``BasicBlock``:
  conv3x3-bn-relu-conv3x3-bn. The *same* branch modules are wrapped by ``ResidualStack``
  (``resnet*``) or ``QIMIA`` (``qimia_resnet*``).
* **Transitions.** A stage whose first block changes width or resolution keeps that block as a
  full torchvision block with its shortcut (projection conv1x1+bn for ResNet-50, the
  parameter-free "option A" subsample + zero-pad for the CIFAR ResNet). Its output is the
  stage's slot 0: QIMIA memory never crosses a change of shape. A stage that keeps the shape
  (``resnet20``'s first) has no transition: all its blocks are branches and slot 0 is the
  previous stage's output.
* **Where torchvision's post-add ReLU goes** (``relu=``):

  - ``"branch_input"`` (default, every mixer): each branch starts with a ReLU of its input and
    the stage output goes through a ReLU. The first branch then computes exactly torchvision's
    block; later ones differ only in that the stream between blocks is not rectified. This is
    the placement both containers share, so ``resnet50`` vs ``qimia_resnet50`` changes nothing
    but how depth is mixed.
  - ``"post_add"`` (``mixer="residual"`` only): branch ``g(s) = ReLU(s + f(s)) - s`` so that
    ``ResidualStack`` computes torchvision's ``ReLU(x + f(x))`` *exactly* (tested against
    ``torchvision.models.resnet50`` after :func:`load_torchvision_resnet`). Use it to run
    torchvision's pretrained weights through this code.

* **Cross-stage memory** (``cross_stage=True``, QIMIA only): every slot of every earlier stage is
  average-pooled to the current resolution and projected by a per-stage-pair 1x1 conv + BN, and
  a per-stage-pair key projection gives its keys; these enter the stage's QIMIA as *external*
  slots (read before the stage's own, gradients flowing). It costs parameters (ResNet-50:
  +18%), so compare it through :func:`qimia.models.matched_pair`.

Parameter counts (``qimia summary``): ``resnet50`` 25,557,032 (torchvision's),
``qimia_resnet50`` +0.95%; ``resnet20`` 269,722, ``qimia_resnet20`` +1.0%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.layers import DepthMemory
from qimia.layers.feature_layout import FeatureLayout
from qimia.models.base import RegistryModel
from qimia.models.mixers import build_mixer, extra_parameters, mixer_spec, width_multiple
from qimia.models.registry import register_model

ReluPlacement = Literal["branch_input", "post_add"]


# ---------------------------------------------------------------------------------- branches
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBranch(nn.Module):
    """torchvision's ``BasicBlock`` without skip and final ReLU: ``(B, Cin, H, W) -> (B, Cout, H/s, W/s)``."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, *, input_relu: bool = False) -> None:
        super().__init__()
        self.input_relu = input_relu
        self.conv1, self.bn1 = _conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width), nn.BatchNorm2d(width)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_relu:
            x = F.relu(x)
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.bn2(self.conv2(x))


class BottleneckBranch(nn.Module):
    """torchvision's ``Bottleneck`` (V1.5, stride on the 3x3) without skip and final ReLU:
    ``(B, Cin, H, W) -> (B, 4 width, H/s, W/s)``."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, *, input_relu: bool = False) -> None:
        super().__init__()
        self.input_relu = input_relu
        self.conv1, self.bn1 = _conv1x1(cin, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv1x1(width, width * 4), nn.BatchNorm2d(width * 4)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_relu:
            x = F.relu(x)
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return self.bn3(self.conv3(x))


class PostAddReLU(nn.Module):
    """``g(s) = ReLU(s + f(s)) - s``: in a ``ResidualStack``, ``s + g(s)`` is torchvision's block."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.branch(x)) - x


class PadShortcut(nn.Module):
    """He et al.'s CIFAR "option A": subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if cout < cin:
            raise ValueError(f"a padding shortcut cannot reduce channels ({cin} -> {cout}).")
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, Cin, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, Cout, H/s, W/s)


class TransitionBlock(nn.Module):
    """A full residual block that changes width/resolution: ``ReLU(branch(x) + shortcut(x))``."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.branch, self.shortcut = branch, shortcut

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))


# ---------------------------------------------------------------------------------- cross-stage
class CrossStageMemory(nn.Module):
    """Earlier stages' slots as external memory of stage ``s``.

    Every value ``v`` of stage ``j < s`` (``(B, C_j, H_j, W_j)``) becomes
    ``BN(W_js AvgPool(v))`` of shape ``(B, C_s, H_s, W_s)`` with key ``K_js(v')`` in the stage
    container's key layout (``(B, heads, d_k)`` layer-wise, ``(B, H, W, heads, d_k)`` component-wise).
    """

    def __init__(self, in_channels: list[int], channels: int, *, heads: int, key_dim: int, granularity: str) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Sequential(_conv1x1(c, channels), nn.BatchNorm2d(channels)) for c in in_channels
        )
        self.key_projections = nn.ModuleList(
            nn.Linear(channels, heads * key_dim, bias=False) for _ in in_channels
        )
        self.layout = FeatureLayout(channels, heads, 1)
        self.heads, self.key_dim, self.granularity = heads, key_dim, granularity

    def forward(self, earlier: list[list[Tensor]], size: tuple[int, int]) -> DepthMemory:
        keys, values = [], []
        for stage_values, project, key_projection in zip(earlier, self.projections, self.key_projections):
            for v in stage_values:
                v = project(F.adaptive_avg_pool2d(v, size))  # (B, C_s, H_s, W_s)
                z = self.layout.features_last(v) if self.granularity == "component" else self.layout.pooled(v)
                keys.append(key_projection(z).unflatten(-1, (self.heads, self.key_dim)))  # (..., heads, d_k)
                values.append(v)
        return DepthMemory(keys, values)


# ---------------------------------------------------------------------------------- the network
@dataclass
class ResNetConfig:
    """Hyper-parameters of :class:`ResNet`."""

    block: Literal["basic", "bottleneck"] = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64  # branch width of stage 1; stage s has width * 2**s
    stem: Literal["imagenet", "cifar"] = "imagenet"
    shortcut: Literal["projection", "pad"] = "projection"
    num_classes: int = 1000
    in_chans: int = 3
    mixer: str = "residual"
    granularity: str = "layer"
    qimia_heads: int = 1
    key_dim: int | None = 16
    relu: ReluPlacement = "branch_input"
    cross_stage: bool = False


class ResNetStage(nn.Module):
    """An optional transition block, then a depth mixer over the remaining branches, then ReLU."""

    def __init__(self, transition: nn.Module | None, mixer: nn.Module | None, cross: CrossStageMemory | None) -> None:
        super().__init__()
        self.transition, self.mixer, self.cross = transition, mixer, cross

    def forward(self, x: Tensor, earlier: list[list[Tensor]]) -> tuple[Tensor, list[Tensor]]:
        """``x`` ``(B, C_in, H, W)`` -> stage output ``(B, C, H', W')`` and the stage's slot values."""
        if self.transition is not None:
            x = self.transition(x)
        if self.mixer is None:
            return x, [x]
        external = self.cross(earlier, x.shape[-2:]) if self.cross is not None and earlier else None
        kwargs = {"external": external} if external is not None else {}
        out = self.mixer(x, return_attention=False, **kwargs)
        return F.relu(out.output), out.values


class ResNet(RegistryModel):
    """Image classifier ``(B, in_chans, H, W) -> (B, num_classes)`` (see the module docstring)."""

    task = "classification"
    width_knob = "width"
    fine_knob = "key_dim"  # bisected when width multiples alone cannot match parameter counts within 1%

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        mixer_spec(config.mixer)  # an unknown mixer is a ValueError naming the registered ones
        if config.relu not in ("branch_input", "post_add"):
            raise ValueError(f"relu must be 'branch_input' or 'post_add', got {config.relu!r}.")
        if config.relu == "post_add" and config.mixer != "residual":
            raise ValueError(
                "relu='post_add' hides a skip connection inside each branch, so it only makes sense for "
                f"mixer='residual' (got mixer={config.mixer!r}); use relu='branch_input'."
            )
        if config.cross_stage and config.mixer != "qimia":
            raise ValueError(f"cross_stage=True needs mixer='qimia' (got {config.mixer!r}).")
        self.width_multiple = width_multiple(config.mixer, config.qimia_heads)
        if config.width < 1 or any(n < 1 for n in config.layers):
            raise ValueError(f"width and every stage's block count must be >= 1, got {config}.")
        self.config = config
        branch_cls = BottleneckBranch if config.block == "bottleneck" else BasicBranch
        self.in_chans = config.in_chans
        stem_width = config.width
        if config.stem == "imagenet":  # conv7x7/2 + maxpool/2, as torchvision
            self.conv1 = nn.Conv2d(config.in_chans, stem_width, 7, stride=2, padding=3, bias=False)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        else:  # CIFAR: conv3x3, no pooling
            self.conv1 = _conv3x3(config.in_chans, stem_width)
            self.pool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_width)

        stages, cin, stage_channels = [], stem_width, []
        for s, depth in enumerate(config.layers):
            width = config.width * 2**s
            cout, stride = width * branch_cls.expansion, (1 if s == 0 else 2)
            transition = None
            if stride != 1 or cin != cout:
                shortcut: nn.Module
                if config.shortcut == "pad":
                    shortcut = PadShortcut(cin, cout, stride)
                else:
                    shortcut = nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
                transition = TransitionBlock(branch_cls(cin, width, stride), shortcut)
            num_branches = depth - (transition is not None)
            stages.append(self._stage(transition, branch_cls, cout, width, num_branches, stage_channels))
            stage_channels.append(cout)
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(cin, config.num_classes)
        self._init_weights()

    def _stage(
        self,
        transition: nn.Module | None,
        branch_cls: type[nn.Module],
        channels: int,
        width: int,
        num_branches: int,
        earlier_channels: list[int],
    ) -> ResNetStage:
        """``num_branches`` branches of ``channels`` features in the configured mixer, after ``transition``."""
        c = self.config
        if num_branches == 0:
            return ResNetStage(transition, None, None)
        post_add = c.relu == "post_add"
        branches = [branch_cls(channels, width, input_relu=not post_add) for _ in range(num_branches)]
        if post_add:
            branches = [PostAddReLU(b) for b in branches]
        cross = None
        structural = {}
        if c.cross_stage and earlier_channels:
            key_dim = c.key_dim if c.key_dim is not None else channels // c.qimia_heads
            cross = CrossStageMemory(
                earlier_channels, channels, heads=c.qimia_heads, key_dim=key_dim, granularity=c.granularity
            )
            structural["detach_external"] = False
        mixer = build_mixer(
            c.mixer, branches, channels, feature_dim=1, granularity=c.granularity,
            qimia_heads=c.qimia_heads, key_dim=c.key_dim, **structural,
        )
        return ResNetStage(transition, mixer, cross)

    def _init_weights(self) -> None:
        """torchvision's initialisation: Kaiming-normal (fan_out) convs, BN weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W)`` -> last stage's map ``(B, C, H', W')``."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}.")
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        earlier: list[list[Tensor]] = []
        for stage in self.stages:
            x, slots = stage(x, earlier)
            earlier.append(slots)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W)`` -> logits ``(B, num_classes)``."""
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

    def example_input(self, batch_size: int = 2) -> Tensor:
        p = self.fc.weight
        return torch.randn(batch_size, self.in_chans, 32, 32, device=p.device, dtype=p.dtype)


# ---------------------------------------------------------------------------------- torchvision weights
def load_torchvision_resnet(model: ResNet, state_dict: dict[str, Tensor]) -> None:
    """Load a torchvision ``resnet*`` state dict (e.g. pretrained ImageNet weights) into ``model``.

    Maps ``layer{s}.0.*`` to the stage's transition (``downsample`` to ``shortcut``) and
    ``layer{s}.{j}.*`` to branch ``j-1`` of the stage's container. Raises if any key or shape
    does not match (``strict``); what the depth mixer adds around the blocks (its spec's
    ``extra_parameters``: QIMIA's keys and queries, DenseFormer's weights, ...) and the cross-stage
    memory are left as initialised.
    """
    ours = model.state_dict()
    mapped: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0].startswith("layer"):
            stage, block, rest = int(parts[0][5:]) - 1, int(parts[1]), parts[2:]
            has_transition = model.stages[stage].transition is not None
            if has_transition and block == 0:
                head = "shortcut" if rest[0] == "downsample" else "branch." + rest[0]
                name = f"stages.{stage}.transition.{head}." + ".".join(rest[1:])
            else:
                index = block - int(has_transition)
                inner = "branch." if model.config.relu == "post_add" else ""
                name = f"stages.{stage}.mixer.blocks.{index}.{inner}" + ".".join(rest)
        else:
            name = key
        if name not in ours or ours[name].shape != value.shape:
            raise ValueError(f"torchvision key {key!r} -> {name!r} does not fit this model (width/layers differ?).")
        mapped[name] = value
    skipped = extra_parameters(model) | {k for k in ours if k.split(".")[2:3] == ["cross"]}  # stages.<s>.cross
    missing = [k for k in ours if k not in mapped and k not in skipped]
    if missing:
        raise ValueError(f"the torchvision state dict lacks {missing[:5]} ({len(missing)} in all).")
    model.load_state_dict(mapped, strict=False)



# ---------------------------------------------------------------------------------- registry
@register_model("resnet50", tiny=dict(width=4, num_classes=10))
@register_model("qimia_resnet50", tiny=dict(width=4, num_classes=10), defaults=dict(mixer="qimia"))
def resnet50(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    width: int = 64,
    mixer: str = "residual",
    granularity: str = "layer",
    qimia_heads: int = 1,
    key_dim: int | None = 16,
    relu: ReluPlacement = "branch_input",
    cross_stage: bool = False,
    layers: tuple[int, ...] = (3, 4, 6, 3),
) -> ResNet:
    """torchvision's ResNet-50 layout (Bottleneck, [3, 4, 6, 3], widths 64..512, expansion 4)."""
    return ResNet(ResNetConfig(
        block="bottleneck", layers=tuple(layers), width=width, stem="imagenet", shortcut="projection",
        num_classes=num_classes, in_chans=in_chans, mixer=mixer, granularity=granularity,
        qimia_heads=qimia_heads, key_dim=key_dim, relu=relu, cross_stage=cross_stage,
    ))


@register_model("resnet20", tiny=dict(width=4))
@register_model("qimia_resnet20", tiny=dict(width=4), defaults=dict(mixer="qimia"))
def resnet20(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    width: int = 16,
    mixer: str = "residual",
    granularity: str = "layer",
    qimia_heads: int = 1,
    key_dim: int | None = 8,
    relu: ReluPlacement = "branch_input",
    cross_stage: bool = False,
    layers: tuple[int, ...] = (3, 3, 3),
) -> ResNet:
    """He et al.'s CIFAR ResNet-20 (3 stages of 3 basic blocks, widths 16/32/64, option-A shortcuts)."""
    return ResNet(ResNetConfig(
        block="basic", layers=tuple(layers), width=width, stem="cifar", shortcut="pad",
        num_classes=num_classes, in_chans=in_chans, mixer=mixer, granularity=granularity,
        qimia_heads=qimia_heads, key_dim=key_dim, relu=relu, cross_stage=cross_stage,
    ))
