"""qimia: attention as memory.

* :class:`QIMIA` - depth memory instead of a residual stream (``qimia.layers``, ``qimia.models``);
* ``qimia.dual`` - the dual form of gradient descent: explain predictions by training patterns;
* ``qimia.memory`` / ``qimia.attention`` - NTM, DNC, Transformers, Universal Transformers, RAM.
"""

from qimia.layers import (
    QIMIA,
    DepthMemory,
    DepthOutput,
    DepthWeightedAverage,
    ResidualStack,
    TransformerBlock,
    TransformerBlockConfig,
)
from qimia.models import create_model, list_models, tiny_kwargs
from qimia.params import MatchResult, count_parameters, match_parameters

__version__ = "0.1.0"

__all__ = [
    "QIMIA",
    "DepthMemory",
    "DepthOutput",
    "DepthWeightedAverage",
    "MatchResult",
    "ResidualStack",
    "TransformerBlock",
    "TransformerBlockConfig",
    "count_parameters",
    "create_model",
    "list_models",
    "match_parameters",
    "tiny_kwargs",
]
