"""qimia: attention as memory.

* :class:`QIMIA` - depth memory instead of a residual stream (``qimia.layers``, ``qimia.models``);
* ``qimia.dual`` - the dual form of gradient descent: explain predictions by training patterns;
* ``qimia.memory`` / ``qimia.attention`` - NTM, DNC, Transformers, Universal Transformers, RAM.

The names below are imported on first use (PEP 562), so ``qimia <command> --help`` does not pay
for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "QIMIA": "qimia.layers",
    "DepthMemory": "qimia.layers",
    "DepthOutput": "qimia.layers",
    "DepthWeightedAverage": "qimia.layers",
    "ResidualStack": "qimia.layers",
    "TransformerBlock": "qimia.layers",
    "TransformerBlockConfig": "qimia.layers",
    "create_model": "qimia.models",
    "list_models": "qimia.models",
    "tiny_kwargs": "qimia.models",
    "MatchResult": "qimia.params",
    "count_parameters": "qimia.params",
    "match_parameters": "qimia.params",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qimia' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
