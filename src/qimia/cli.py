"""The ``qimia`` command line: one entry point, one Hydra app per sub-command.

    qimia train   experiment=... [key=value ...]   # train one model
    qimia compare experiment=... seeds=3           # residual vs QIMIA vs baselines, several seeds
    qimia dual mnist ...                           # the dual form of gradient descent
    qimia memory model=ntm task=copy               # NTM, DNC, LSTM; memory ram|ut|jacobian
    qimia <command> --help | --cfg job | -m ...    # Hydra's flags, for every command

Every command takes Hydra overrides against its packaged config (:mod:`qimia.app`). The
command table below names each command's primary config and its task function; the function's
module is imported only when a job runs, so ``--help`` and ``--cfg`` stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    """One sub-command: the primary config ``qimia/conf/<root>/<config>.yaml`` (as
    ``"<root>/<config>"``), the task function ``"module:function"`` that runs a composed config,
    a one-line help, and optionally a driver ``"module:function"`` called as
    ``driver(name, config, task, argv)`` instead of one Hydra app (``qimia compare`` launches a
    sweep of its task function, then reports)."""

    config: str
    task: str
    help: str
    driver: str | None = None


COMMANDS: dict[str, Command] = {
    "train": Command("models/train", "qimia.experiment.train:main", "train one model of the QIMIA families"),
    "compare": Command("models/compare", "qimia.experiment.compare:job",
                       "compare residual, QIMIA and baselines over seeds, parameter-matched",
                       driver="qimia.experiment.compare:drive"),
    "transfer": Command("models/transfer", "qimia.experiment.transfer:main",
                        "transfer heads over a frozen base network's memory (QIMIA head, controls)"),
    "summary": Command("models/summary", "qimia.models.summary:main", "parameter counts of the model families"),
    "report": Command("models/report", "qimia.experiment.report:main",
                      "tables and figures of any folder of finished runs"),
    "evidence": Command("models/evidence", "qimia.experiment.evidence:main",
                        "the verdict table of the evidence tasks (reports/evidence/README.md)"),
    "dual mnist": Command("dual/mnist", "qimia.dual.cli:mnist", "dual form on MNIST: record, Table 1, figures"),
    "dual multitask": Command("dual/multitask", "qimia.dual.cli:multitask",
                              "dual form, two tasks trained jointly: task shares of the attention"),
    "dual continual": Command("dual/continual", "qimia.dual.cli:continual",
                              "dual form, two tasks one after the other: task shares and masking"),
    "dual lm": Command("dual/lm", "qimia.dual.cli:lm", "dual form of an LSTM LM: top training passages"),
    "dual verify": Command("dual/verify", "qimia.dual.cli:verify",
                           "check a dual-form store's checksums and its exact reconstruction"),
    "memory": Command("memory/train", "qimia.memory.cli:main",
                      "NTM / DNC / LSTM on the algorithmic tasks (copy, repeat copy, recall, sort, n-grams)"),
    "memory ram": Command("memory/ram", "qimia.attention.cli:ram",
                          "recurrent attention model (hard glimpses, REINFORCE) on MNIST"),
    "memory ut": Command("memory/ut", "qimia.attention.cli:ut",
                         "Universal Transformer with ACT vs a fixed-depth Transformer"),
    "memory jacobian": Command("memory/jacobian", "qimia.attention.cli:jacobian",
                               "Jacobian sensitivity maps of a trained classifier / RNN"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: qimia <command> [--help] [--cfg job] [-m] [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    lines += ["", "Run 'qimia <command> --help' for the config groups and options of one command.",
              "Errors print without a traceback; HYDRA_FULL_ERROR=1 shows it."]
    return "\n".join(lines)


def _match(args: list[str]) -> tuple[str, list[str]] | None:
    """The longest command name made of the first words of ``args``, and the rest."""
    for words in range(min(3, len(args)), 0, -1):
        name = " ".join(args[:words])
        if name in COMMANDS:
            return name, args[words:]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``qimia <command> ...`` to its Hydra app."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    found = _match(args)
    if found is None:
        group = [name for name in COMMANDS if name.split()[0] == args[0]]
        known = ", ".join(group) if group else ", ".join(COMMANDS)
        print(f"qimia: unknown command {' '.join(args[:2])!r}; choose one of: {known}.\n\n{_usage()}", file=sys.stderr)
        return 2
    name, rest = found
    from qimia.app import load_function, run_app

    command = COMMANDS[name]
    if command.driver is not None:
        return int(load_function(command.driver)(name, command.config, command.task, rest))
    return run_app(name, command.config, command.task, rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
