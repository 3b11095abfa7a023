"""The ``qimia`` command line: one entry point, one sub-command per system.

    qimia train   experiment=...            # train one model (Hydra overrides)
    qimia compare experiment=... seeds=3    # residual vs QIMIA vs baselines, several seeds
    qimia dual    <command> ...             # the dual form of gradient descent
    qimia memory  <command> ...             # NTM, DNC, Universal Transformer, RAM, Jacobians

Each sub-command lives in its own module and is imported only when it is used, so
``qimia dual --help`` does not pay for Hydra and Lightning start-up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# sub-command -> (module, function taking argv list, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("qimia.experiment.cli", "train_main", "train one model from a Hydra config"),
    "compare": ("qimia.experiment.cli", "compare_main", "compare residual, QIMIA and baselines over seeds"),
    "dual": ("qimia.dual.cli", "main", "record, reconstruct and explain with the dual form of SGD"),
    "memory": ("qimia.memory.cli", "main", "classic attention and memory models on algorithmic tasks"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: qimia <command> [args ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'qimia <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``qimia <command> ...`` to the module that implements it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"qimia: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(rest)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
