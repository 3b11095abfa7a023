"""Classic memory-augmented networks: NTM, DNC, their addressing and heads, and algorithmic tasks."""

from qimia.memory.addressing import circular_shift, content_weighting, interpolate, ntm_address, sharpen
from qimia.memory.heads import read_memory, write_memory
from qimia.memory.lstm import LSTMBaseline, LSTMConfig
from qimia.memory.dnc import DNC, DNCConfig, DNCState
from qimia.memory.ntm import NTM, NTMConfig, NTMState
from qimia.memory.tasks import TASKS, make_task, sequence_metrics

__all__ = [
    "NTM", "NTMConfig", "NTMState", "DNC", "DNCConfig", "DNCState", "LSTMBaseline", "LSTMConfig",
    "TASKS", "make_task", "sequence_metrics",
    "circular_shift", "content_weighting", "interpolate", "ntm_address", "sharpen", "read_memory", "write_memory",
]
