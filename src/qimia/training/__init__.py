"""Lightning glue around pure ``nn.Module`` networks: task modules, callbacks, schedules."""

from qimia.training.base import TaskModule
from qimia.training.callbacks import FitClock, MetricHistory, RNGState, RunProgress, Throughput
from qimia.training.schedulers import ReduceLROnTarget, warmup_cosine
from qimia.training.tasks import TASKS, ClassificationModule, DenoisingModule, LanguageModelModule

__all__ = [
    "TASKS",
    "ClassificationModule",
    "DenoisingModule",
    "FitClock",
    "LanguageModelModule",
    "MetricHistory",
    "RNGState",
    "ReduceLROnTarget",
    "RunProgress",
    "TaskModule",
    "Throughput",
    "warmup_cosine",
]
