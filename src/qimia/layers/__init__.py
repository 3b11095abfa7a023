"""Reusable layers: the depth-mixing containers and the blocks they take."""

from qimia.layers.depth_output import DepthMemory, DepthOutput
from qimia.layers.depth_weighted import DepthWeightedAverage
from qimia.layers.feature_layout import FeatureLayout
from qimia.layers.qimia import QIMIA
from qimia.layers.residual import ResidualStack
from qimia.layers.transformer_block import TransformerBlock, TransformerBlockConfig

__all__ = [
    "QIMIA",
    "DepthMemory",
    "DepthOutput",
    "DepthWeightedAverage",
    "FeatureLayout",
    "ResidualStack",
    "TransformerBlock",
    "TransformerBlockConfig",
]
