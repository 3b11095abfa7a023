"""``qimia memory <command> key=value ...``: train and inspect the classic memory models.

Commands:
    train     NTM / DNC / LSTM on copy, repeat_copy, associative_recall, priority_sort
    ram       Recurrent Attention Model on MNIST (28x28) or translated MNIST (60x60)
    ut        Universal Transformer with ACT vs a fixed-depth Transformer on an algorithmic task
    jacobian  Jacobian sensitivity map of a classifier / sequential Jacobian of an RNN

Every option is ``key=value`` (``--key value`` also works); unknown keys are rejected with
the list of valid ones. Examples::

    qimia memory train task=copy model=ntm steps=20000 batch_size=16 eval_lengths=40,80
    qimia memory train resume=runs/memory/copy_ntm_s0/checkpoint.pt steps=40000
    qimia memory ram steps=3000 glimpses=6 translated=false
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable, Sequence


class ConfigError(ValueError):
    """A bad ``key=value`` override."""


def _convert(name: str, raw: str, kind) -> object:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):  # ``int | None``: the non-None type
        (kind,) = [a for a in typing.get_args(kind) if a is not type(None)]
        return _convert(name, raw, kind)
    if origin is list:
        (inner,) = typing.get_args(kind)
        return [_convert(name, part, inner) for part in raw.split(",") if part.strip()]
    if kind is bool:
        low = raw.lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")
    try:
        return kind(raw)
    except ValueError as err:
        raise ConfigError(f"{name}={raw!r}: expected {kind.__name__}") from err


def parse_overrides(argv: Sequence[str], config_cls: type) -> object:
    """Build ``config_cls`` from ``key=value`` (or ``--key value``) arguments, rejecting unknown keys."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    pairs: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("--"):
            key = arg[2:].replace("-", "_")
            if "=" in key:
                key, value = key.split("=", 1)
            elif args:
                value = args.pop(0)
            else:
                raise ConfigError(f"option {arg} needs a value")
        elif "=" in arg:
            key, value = arg.split("=", 1)
        else:
            raise ConfigError(f"expected key=value, got {arg!r}")
        if key not in fields:
            raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(sorted(fields))}")
        pairs[key] = value
    values = {k: _convert(k, v, hints[k]) for k, v in pairs.items()}
    try:
        return config_cls(**values)
    except ValueError as err:  # the config's own validation (unknown task, bad lengths, ...)
        raise ConfigError(str(err)) from err


def _help(config_cls: type, doc: str) -> str:
    lines = [doc.strip(), "", "keys (default):"]
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"  {f.name}={default}")
    return "\n".join(lines)


def _cmd_train(argv: Sequence[str]) -> int:
    from qimia.memory.train import TrainConfig, train

    if any(a in {"-h", "--help"} for a in argv):
        print(_help(TrainConfig, "qimia memory train key=value ...: train NTM/DNC/LSTM on an algorithmic task"))
        return 0
    cfg = parse_overrides(argv, TrainConfig)
    history = train(cfg)
    last = history["eval"][-1] if history["eval"] else {}
    summary = {"parameters": history["parameters"], "final_eval": last, "generalisation": history.get("generalisation"),
               "out": cfg.out}
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_ram(argv: Sequence[str]) -> int:
    from qimia.attention.ram_train import RAMTrainConfig, train_ram

    if any(a in {"-h", "--help"} for a in argv):
        print(_help(RAMTrainConfig, "qimia memory ram key=value ...: train a Recurrent Attention Model on MNIST"))
        return 0
    result = train_ram(parse_overrides(argv, RAMTrainConfig))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
    return 0


def _cmd_ut(argv: Sequence[str]) -> int:
    from qimia.attention.ut_train import UTTrainConfig, train_ut

    if any(a in {"-h", "--help"} for a in argv):
        print(_help(UTTrainConfig, "qimia memory ut key=value ...: Universal Transformer + ACT vs fixed depth"))
        return 0
    result = train_ut(parse_overrides(argv, UTTrainConfig))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
    return 0


def _cmd_jacobian(argv: Sequence[str]) -> int:
    from qimia.attention.jacobian_cli import JacobianConfig, run_jacobian

    if any(a in {"-h", "--help"} for a in argv):
        print(_help(JacobianConfig, "qimia memory jacobian key=value ...: sensitivity maps"))
        return 0
    print(json.dumps(run_jacobian(parse_overrides(argv, JacobianConfig)), indent=1))
    return 0


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "train": (_cmd_train, "train NTM / DNC / LSTM on copy, repeat_copy, associative_recall, priority_sort"),
    "ram": (_cmd_ram, "Recurrent Attention Model (hard glimpses, REINFORCE) on MNIST / translated MNIST"),
    "ut": (_cmd_ut, "Universal Transformer with ACT vs a fixed-depth Transformer"),
    "jacobian": (_cmd_jacobian, "Jacobian sensitivity map / sequential Jacobian heat map"),
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(__doc__.strip())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"qimia memory: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[name][0](rest)
    except ConfigError as err:
        print(f"qimia memory {name}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
