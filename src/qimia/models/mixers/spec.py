"""The one declaration of a depth mixer: :class:`MixerSpec`, and the registry every family,
the optimizer's parameter groups, the torchvision loader, attention inspection and transfer taps
read it from.

A spec says, in one place:

* ``container``: the class it builds (``isinstance`` checks: which modules are depth mixers);
* ``build(blocks, dim, *, feature_dim, **options)``: how it wraps a family's blocks;
* ``options``: which of the family-level QIMIA options (``granularity``, ``qimia_heads``,
  ``key_dim``) reach it; every other mixer ignores them, so one config can sweep mixers;
* ``structural``: which wiring requirements of a family (``causal``: no position may read later
  tokens; ``detach_external``: gradients into an external memory) it takes; a mixer without the
  option satisfies the requirement by construction (a residual stream is causal, it reads no
  external memory);
* ``no_decay``: names of its own parameters kept out of weight decay (decaying them biases the
  comparison between mixers: QIMIA's queries towards uniform reads, DenseFormer's weights away
  from the identity);
* ``extra_parameters``: names of the parameters it adds around the blocks, which a torchvision
  checkpoint does not have (:func:`qimia.models.load_torchvision_resnet` leaves them as
  initialised);
* ``width_multiple(qimia_heads)``: what the family's width knob must be a multiple of for this
  mixer (QIMIA's heads split the features);
* ``writes_memory``: whether it writes keys and values another QIMIA can read (``DepthOutput.memory``);
* ``records_attention``: whether its output carries a depth-attention map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

#: the family-level options every builder takes (``mixer``'s companions in every model config)
FAMILY_OPTIONS = ("granularity", "qimia_heads", "key_dim")
#: the wiring requirements a family may state for its mixer
STRUCTURAL_OPTIONS = ("causal", "detach_external")


def one(qimia_heads: int) -> int:
    """The width multiple of a mixer that does not split features."""
    return 1


@dataclass(frozen=True)
class MixerSpec:
    """One depth mixer (see the module docstring for each field)."""

    name: str
    container: type[nn.Module]
    build: Callable[..., nn.Module]
    options: tuple[str, ...] = ()
    structural: tuple[str, ...] = ()
    no_decay: tuple[str, ...] = ()
    extra_parameters: tuple[str, ...] = ()
    width_multiple: Callable[[int], int] = one
    writes_memory: bool = False
    records_attention: bool = False

    def __post_init__(self) -> None:
        for field, allowed in (("options", FAMILY_OPTIONS), ("structural", STRUCTURAL_OPTIONS)):
            unknown = sorted(set(getattr(self, field)) - set(allowed))
            if unknown:
                raise ValueError(f"mixer {self.name!r}: unknown {field} {unknown}; choose among {list(allowed)}.")


_MIXERS: dict[str, MixerSpec] = {}


def register_mixer(spec: MixerSpec) -> MixerSpec:
    """Add ``spec`` to the registry (each mixer file calls this once)."""
    if spec.name in _MIXERS:
        raise ValueError(f"mixer {spec.name!r} is already registered.")
    _MIXERS[spec.name] = spec
    return spec


def mixer_names() -> list[str]:
    """The registered mixers, in registration order."""
    return list(_MIXERS)


def mixer_spec(name: str) -> MixerSpec:
    """The spec of ``name``.

    Raises:
        ValueError: unknown mixer; the message lists the registered ones.
    """
    if name not in _MIXERS:
        raise ValueError(f"unknown mixer {name!r}; choose one of {mixer_names()}.")
    return _MIXERS[name]


def build_mixer(
    mixer: str,
    blocks: list[nn.Module],
    dim: int,
    *,
    feature_dim: int,
    granularity: str = "layer",
    qimia_heads: int = 1,
    key_dim: int | None = None,
    **structural: Any,
) -> nn.Module:
    """Wrap ``blocks`` in ``mixer``'s container, forwarding only the options its spec declares.

    Args:
        blocks: shape-preserving branches; ``dim``: their feature size; ``feature_dim``: their
            feature axis (``-1`` tokens, ``1`` images).
        granularity, qimia_heads, key_dim: the family's QIMIA options (see ``MixerSpec.options``).
        structural: the family's wiring requirements (``causal``, ``detach_external``).

    Raises:
        ValueError: unknown mixer. TypeError: a structural option no mixer knows.
    """
    spec = mixer_spec(mixer)
    unknown = sorted(set(structural) - set(STRUCTURAL_OPTIONS))
    if unknown:
        raise TypeError(f"build_mixer got unknown options {unknown}; structural options are {list(STRUCTURAL_OPTIONS)}.")
    family = {"granularity": granularity, "qimia_heads": qimia_heads, "key_dim": key_dim}
    kwargs = {k: family[k] for k in spec.options}
    kwargs.update({k: v for k, v in structural.items() if k in spec.structural})
    return spec.build(list(blocks), dim, feature_dim=feature_dim, **kwargs)


def width_multiple(mixer: str, qimia_heads: int) -> int:
    """What a family's width knob must be a multiple of because of ``mixer`` (QIMIA: its heads)."""
    return mixer_spec(mixer).width_multiple(qimia_heads)


def writes_memory(mixer: str) -> bool:
    """Whether ``mixer`` writes a depth memory (keys and values) another QIMIA can read."""
    return mixer_spec(mixer).writes_memory


def container_classes(*, records_attention: bool = False) -> tuple[type[nn.Module], ...]:
    """The classes the registered mixers build (only those that record attention, if asked)."""
    found = [s.container for s in _MIXERS.values() if s.records_attention or not records_attention]
    return tuple(dict.fromkeys(found))


def _owned(model: nn.Module, field: str, names: list[str]) -> set[str]:
    """Those of ``names`` (full names in ``model``) that belong to a mixer container's own
    weights listed under its spec's ``field`` (``no_decay`` or ``extra_parameters``)."""
    by_class: dict[type[nn.Module], set[str]] = {}
    for spec in _MIXERS.values():
        by_class.setdefault(spec.container, set()).update(getattr(spec, field))
    owned = set()
    for prefix, module in model.named_modules():
        own = by_class.get(type(module))
        if not own:
            continue
        start = f"{prefix}." if prefix else ""
        owned.update(n for n in names if n.startswith(start) and n[len(start):].split(".")[0] in own)
    return owned


def no_decay_parameters(model: nn.Module) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the mixers' own weights that must not decay."""
    return _owned(model, "no_decay", [name for name, _ in model.named_parameters()])


def extra_parameters(model: nn.Module) -> set[str]:
    """Keys of ``model.state_dict()`` that the mixers add around their blocks."""
    return _owned(model, "extra_parameters", list(model.state_dict()))
