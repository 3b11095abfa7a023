"""The model registry: ``create_model(name, **kwargs)``, ``list_models()``, ``tiny_kwargs(name)``.

timm style: each family file decorates its builder functions with :func:`register_model`. One
builder may be registered under several names with different ``defaults`` (``qimia_resnet20`` is
``resnet20`` with ``mixer="qimia"``), so the residual and QIMIA versions of a family are built by
the very same code and differ only in the depth mixer.

Example:
    >>> import qimia.models as qm
    >>> qm.list_models("*resnet20")
    ['qimia_resnet20', 'resnet20']
    >>> net = qm.create_model("qimia_resnet20", **qm.tiny_kwargs("qimia_resnet20"))
    >>> net.task
    'classification'
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One registered name: the builder, the kwargs fixed by the name, and a tiny CPU variant."""

    name: str
    builder: Builder
    tiny: dict[str, Any]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> list[str]:
        """The keyword arguments the builder takes."""
        return list(inspect.signature(self.builder).parameters)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, tiny: dict[str, Any], defaults: dict[str, Any] | None = None) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name``.

    Args:
        name: registry name, unique.
        tiny: kwargs that make a tiny variant (seconds on a CPU) for tests and ``fast_dev_run``.
        defaults: kwargs this name fixes (e.g. ``{"mixer": "qimia"}``); user kwargs override them.

    Returns:
        A decorator returning the builder unchanged, so one builder can carry several names.
    """

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered.")
        accepted = set(inspect.signature(builder).parameters)
        unknown = sorted((set(tiny) | set(defaults or {})) - accepted)
        if unknown:
            raise TypeError(f"register_model({name!r}): {builder.__name__} takes no kwargs {unknown}.")
        _REGISTRY[name] = ModelEntry(name, builder, dict(tiny), dict(defaults or {}))
        return builder

    return decorator


def _entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {list_models()}.")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered names).
        TypeError: a kwarg the builder does not take (the message names it and lists the valid ones).
    """
    entry = _entry(name)
    unknown = sorted(set(kwargs) - set(entry.accepted))
    if unknown:
        raise TypeError(f"model {name!r} got unknown kwargs {unknown}; it accepts {sorted(entry.accepted)}.")
    return entry.builder(**{**entry.defaults, **kwargs})


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by an ``fnmatch`` pattern such as ``"*resnet*"``."""
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def tiny_kwargs(name: str) -> dict[str, Any]:
    """Kwargs that make a tiny CPU variant of ``name`` (a fresh dict, safe to modify)."""
    return dict(_entry(name).tiny)


def fixed_kwargs(name: str) -> dict[str, Any]:
    """The kwargs the name itself fixes (``qimia_resnet20`` fixes ``mixer="qimia"``)."""
    return dict(_entry(name).defaults)


def model_defaults(name: str) -> dict[str, Any]:
    """The value of every builder kwarg for ``name`` when the user passes none (fixed ones included)."""
    entry = _entry(name)
    params = inspect.signature(entry.builder).parameters
    values = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**values, **entry.defaults}
