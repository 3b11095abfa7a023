"""The experiment pipeline: Hydra configs -> Lightning runs (``qimia train``) and multi-seed,
parameter-matched comparisons of depth mixers (``qimia compare``)."""

from qimia.experiment.compare import compare
from qimia.experiment.config import ConfigError, compose_config
from qimia.experiment.train import RunResult, run_training

__all__ = ["ConfigError", "RunResult", "compare", "compose_config", "run_training"]
