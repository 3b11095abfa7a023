"""``qimia train`` and ``qimia compare``: Hydra ``key=value`` overrides on the packaged config.

    qimia train                                   # resnet20 on scikit-learn digits
    qimia train experiment=mnist_resnet data.path=../shared/data/mnist.pkl.gz
    qimia train ... ckpt_path=outputs/train/.../checkpoints/last.ckpt      # resume
    qimia compare                                 # residual vs QIMIA on digits, 3 seeds
    qimia compare experiment=mnist_resnet seeds=3 data.path=...
    qimia train --cfg [overrides]                 # print the composed config and exit
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from qimia.experiment.config import ConfigError, compose_config, describe_groups

USAGE = """usage: qimia {command} [--cfg] [key=value ...]

{what}

Config groups (choose one option each, e.g. model=resnet50 data=mnist):
{groups}

Any key of the composed config can be overridden (see --cfg), e.g.
  trainer.max_epochs=5 optimizer.lr=1e-3 seed=1 seeds=3 tiny=true compile=true
  trainer=ddp trainer.accelerator=cpu trainer.devices=2 trainer.precision=bf16-mixed
Unknown keys are an error; add a new model kwarg with a leading '+' (+model.dropout=0.1).

options:
  -h, --help   show this message
  --cfg        print the composed config and exit
"""

WHAT = {
    "train": "Train one model; logs (CSV, TensorBoard) and checkpoints go to output_dir.\n"
    "Resume an interrupted run with ckpt_path=<.../last.ckpt>.",
    "compare": "Train every arm (compare.mixers, default residual and qimia; or compare.variants) for\n"
    "`seeds` seeds with identical data, optimizer and budget, parameter-matched; write results.md,\n"
    "results.csv, learning_curves.png and depth_attention.png to compare.out_dir and print the table.\n"
    "Re-running the same command skips finished (arm, seed) runs.",
}

# errors a user can fix from the command line: printed without a traceback
USER_ERRORS = (ConfigError, FileNotFoundError, ImportError, ValueError, TypeError)


def _parse(command: str, argv: Sequence[str]):
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE.format(command=command, what=WHAT[command], groups=describe_groups()))
        return None, True
    show = "--cfg" in args
    args = [a for a in args if a != "--cfg"]
    unknown = [a for a in args if a.startswith("--")]
    if unknown:
        raise ConfigError(f"unknown options {unknown}; qimia {command} takes key=value overrides (see --help).")
    cfg = compose_config(args)
    if show:
        print(OmegaConf.to_yaml(cfg))
        return None, True
    return cfg, False


def _run(command: str, argv: Sequence[str]) -> int:
    try:
        cfg, done = _parse(command, argv)
        if done:
            return 0
        if command == "train":
            from qimia.experiment.train import run_training

            result = run_training(cfg)
            print(f"[train] {result.params:,} parameters, {result.world_size} process(es); test: {result.test}; "
                  f"throughput {result.throughput:,.0f} {result.unit}/s; outputs in {result.output_dir}")
        else:
            from qimia.experiment.compare import StaleResultsError, compare

            try:
                shown = [a for a in argv if a not in ("compare.report_only=true", "--cfg")]
                compare(cfg, command=" ".join(["qimia compare", *shown]))
            except StaleResultsError as err:
                raise ConfigError(str(err)) from err
    except USER_ERRORS as err:
        print(f"qimia {command}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


def train_main(argv: Sequence[str]) -> int:
    """``qimia train [key=value ...]``."""
    return _run("train", argv)


def compare_main(argv: Sequence[str]) -> int:
    """``qimia compare [key=value ...]``."""
    return _run("compare", argv)
