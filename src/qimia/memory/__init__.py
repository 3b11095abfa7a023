"""Classic memory-augmented networks: NTM, DNC and the LSTM baseline, their heads and controllers,
and the registry that builds them by name (``qimia memory model=<name> task=<task>`` trains them).

The addressing they share with :mod:`qimia.attention` is :mod:`qimia.addressing`; the algorithmic
tasks are :mod:`qimia.data.algorithmic`; the training task is
:class:`qimia.training.sequence.SequenceModule`.
"""

from qimia.memory.dnc import DNC, DNCConfig, DNCState
from qimia.memory.heads import read_memory, write_memory
from qimia.memory.lstm import LSTMBaseline, LSTMConfig
from qimia.memory.ntm import NTM, NTMConfig, NTMState
from qimia.memory.registry import create_memory_model, list_memory_models, memory_model_defaults

__all__ = [
    "NTM", "NTMConfig", "NTMState", "DNC", "DNCConfig", "DNCState", "LSTMBaseline", "LSTMConfig",
    "create_memory_model", "list_memory_models", "memory_model_defaults", "read_memory", "write_memory",
]
