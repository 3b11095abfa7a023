"""Model families built from the depth-mixing containers, and the registry that names them.

    >>> import qimia.models as qm
    >>> net = qm.create_model("qimia_resnet20")          # mixer="qimia"
    >>> ref = qm.create_model("resnet20")                # the same blocks, residual
    >>> qm.list_models("*transformer_lm")

Every model has ``task``, ``width_knob``, ``width_multiple``, ``depth_attention(x)`` and
``example_input(batch_size)``; every family takes ``mixer`` in :func:`qimia.models.mixers.mixer_names`
(one spec per mixer, :mod:`qimia.models.mixers`); see ``docs/models.md``.
"""

from qimia.models import resnet as _resnet  # noqa: F401  (importing a family registers it)
from qimia.models import transformer_lm as _transformer_lm  # noqa: F401
from qimia.models import unet as _unet  # noqa: F401
from qimia.models import transfer as _transfer  # noqa: F401
from qimia.models.inspection import depth_attention
from qimia.models.matching import MatchedPair, matched_pair
from qimia.models.registry import (
    create_model,
    fixed_kwargs,
    list_models,
    model_defaults,
    register_model,
    tiny_kwargs,
)
from qimia.models.resnet import ResNet, ResNetConfig, load_torchvision_resnet
from qimia.models.transformer_lm import TransformerLM, TransformerLMConfig
from qimia.models.transfer import FeatureMemory, TransferHead
from qimia.models.unet import UNetConfig, UNetDenoiser

__all__ = [
    "FeatureMemory",
    "MatchedPair",
    "ResNet",
    "ResNetConfig",
    "TransformerLM",
    "TransformerLMConfig",
    "TransferHead",
    "UNetConfig",
    "UNetDenoiser",
    "create_model",
    "depth_attention",
    "fixed_kwargs",
    "list_models",
    "load_torchvision_resnet",
    "matched_pair",
    "model_defaults",
    "register_model",
    "tiny_kwargs",
]
