"""The registry of the classic sequence models: ``create_memory_model(name, **kwargs)``.

Each model file registers its class with its config dataclass::

    @register_memory_model("ntm", NTMConfig)
    class NTM(RecurrentMemory): ...

and any model is then built from a name and the config's fields, unknown fields refused::

    >>> from qimia.memory import create_memory_model, list_memory_models
    >>> list_memory_models()
    ['dnc', 'lstm', 'ntm']
    >>> ntm = create_memory_model("ntm", input_size=9, output_size=8, memory_slots=64)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn


class MemoryModelEntry(NamedTuple):
    """One registered name: the model class and the dataclass of its hyper-parameters."""

    model: type[nn.Module]
    config: type


_REGISTRY: dict[str, MemoryModelEntry] = {}


def register_memory_model(name: str, config: type) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register ``model(config(**kwargs))`` as ``name``."""

    def decorator(model: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"memory model {name!r} is already registered.")
        _REGISTRY[name] = MemoryModelEntry(model, config)
        return model

    return decorator


def _entry(name: str) -> MemoryModelEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown memory model {name!r}; registered: {list_memory_models()}.")
    return _REGISTRY[name]


def memory_model_defaults(name: str) -> dict[str, Any]:
    """Every hyper-parameter of ``name`` with its default."""
    return {f.name: f.default for f in dataclasses.fields(_entry(name).config)}


def create_memory_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` from its config's fields.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered ones).
        TypeError: a field the model's config does not have (named, with the valid ones).
    """
    entry = _entry(name)
    known = memory_model_defaults(name)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(f"memory model {name!r} got unknown options {unknown}; it takes {sorted(known)}.")
    return entry.model(entry.config(**kwargs))


def list_memory_models() -> list[str]:
    """Sorted registered names."""
    return sorted(_REGISTRY)
