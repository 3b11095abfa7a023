"""The experiment pipeline: Hydra configs -> Lightning runs (``qimia train``), multi-seed,
parameter-matched comparisons of depth mixers as sweeps (``qimia compare``), and their reports."""

from qimia.experiment.compare import run_arm
from qimia.experiment.train import RunResult, load_run, run_training

__all__ = ["RunResult", "load_run", "run_arm", "run_training"]
