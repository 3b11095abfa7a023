"""The experiment pipeline: Hydra configs -> Lightning runs (``qimia train``) and multi-seed,
parameter-matched comparisons of depth mixers (``qimia compare``)."""

from qimia.experiment.compare import compare
from qimia.experiment.train import RunResult, run_training

__all__ = ["RunResult", "compare", "run_training"]
