"""Classic attention: associative (soft) attention, Transformer, Universal Transformer + ACT,
the Recurrent Attention Model (hard glimpses) and Jacobian (implicit) attention."""

from qimia.attention.associative import AdditiveAttention, DotProductAttention, MemoryAttention
from qimia.attention.jacobian import input_jacobian, sensitivity_map, sequential_jacobian
from qimia.attention.ram import GlimpseSensor, RAMConfig, RecurrentAttentionModel, ram_loss
from qimia.attention.transformer import MultiHeadAttention, Transformer, TransformerConfig
from qimia.attention.universal import DeepTransformer, UniversalTransformer, UTConfig, ponder_loss

__all__ = [
    "AdditiveAttention", "DotProductAttention", "MemoryAttention", "input_jacobian", "sensitivity_map",
    "sequential_jacobian", "GlimpseSensor", "RAMConfig", "RecurrentAttentionModel", "ram_loss",
    "MultiHeadAttention", "Transformer", "TransformerConfig", "DeepTransformer", "UniversalTransformer",
    "UTConfig", "ponder_loss",
]
