"""Every ``qimia`` sub-command is a Hydra application: one CLI dialect for the whole library.

    qimia train experiment=mnist_resnet trainer.max_epochs=5   # key=value overrides
    qimia train --help                                         # config groups and the config
    qimia train --cfg job                                      # print the composed config, run nothing
    qimia train -m seed=0,1,2                                  # a sweep: one run folder per job
    qimia train -m seed=0,1 hydra/launcher=joblib              # ... in parallel processes
    qimia train hydra.run.dir=/scratch/run1                    # anywhere else
    HYDRA_FULL_ERROR=1 qimia train ...                         # the full traceback of an error

An app is a primary config ``qimia/conf/<root>/<config>.yaml`` plus a task function
``cfg -> result`` named as ``"module:function"`` (imported only when the job runs, so ``--help``
and ``--cfg`` stay fast). Each system has its own config root (``models``, ``memory``, ``dual``),
so ``--help`` lists only the groups that command can use; every root also sees ``conf/shared``
(``trainer``, ``optimizer``, ``scheduler``, and ``app``, which each primary config lists in its
defaults). ``app`` puts every run under ``outputs/<command>/<name>/<time>`` and every sweep under
``outputs/<command>/<name>/multirun/<time>/<job number>``; a job reads its folder from
:func:`output_dir`.

Before Hydra runs, :func:`check_overrides` composes the config once more to turn the two
mistakes a user makes most into errors that say what to do: a misspelt key names the nearest
existing key, and a value of the wrong type names the key and the type it needs (from the packaged
default, or the signature of the ``_target_`` it is an argument of).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"  # Hydra's own switch: set to 1 for full tracebacks


class ConfigError(ValueError):
    """A config could not be composed from the given overrides, or a value has the wrong type."""


# errors a user can fix from the command line: printed in one paragraph without a traceback
# (``HYDRA_FULL_ERROR=1`` shows it)
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, FileNotFoundError, ValueError, TypeError, ImportError, FloatingPointError,  # (a diverged loss)
)


def config_dir(root: str = "") -> Path:
    """The packaged ``qimia/conf`` folder, or one of its config roots (``models``, ``shared``, ...)."""
    return Path(str(resources.files("qimia") / "conf")) / root


def _split(config_name: str) -> tuple[str, str]:
    """``"models/train"`` -> (``conf/models``, ``"train"``)."""
    root, _, name = config_name.rpartition("/")
    return root, name


def group_options(group: str, root: str = "models") -> list[str]:
    """Names of the packaged configs of one group (``model``, ``data``, ``trainer``, ...) as the
    commands of config root ``root`` see them; a sub-folder's are ``<folder>/<name>`` (``evidence/lm``)."""
    for folder in (config_dir(root) / group, config_dir("shared") / group):
        if folder.is_dir():
            return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))
    return []


def _is_group(root: str, key: str) -> bool:
    return (config_dir(root) / key).is_dir() or (config_dir("shared") / key).is_dir()


def output_dir() -> Path:
    """The folder of the running Hydra job (``hydra.run.dir`` or the sweep's job folder)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def load_function(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------------------------
# composing a config outside a Hydra job (tests, notebooks, the pre-flight check)


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config of ``config_name`` (``"<root>/<config>"``, e.g. ``"models/train"``;
    without the ``hydra`` node), as a job sees it.

    Raises:
        ConfigError: unknown key, unknown group option or malformed override; the message names
            the nearest existing key or the available options.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    bad = [o for o in overrides if "=" not in o and not o.startswith("~")]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}; run with --help for the options.")
    root, name = _split(config_name)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir(root)), version_base="1.3", job_name=name):
            try:
                # every config root also sees conf/shared (as ``--config-dir`` does for a command)
                shared = f"hydra.searchpath=[file://{config_dir('shared')}]"
                return hydra_compose(config_name=name, overrides=[*overrides, shared])
            except (HydraException, OmegaConfBaseException) as err:
                raise ConfigError(_explain(str(err), config_name, overrides)) from err
    finally:
        GlobalHydra.instance().clear()


def _leaf_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            yield path
            yield from _leaf_keys(node._get_node(key), f"{path}.")


def _groups_only(root: str, overrides: Sequence[str]) -> list[str]:
    """The overrides that choose a config group option (``model=resnet50``), not a value."""
    return [o for o in overrides if "=" in o and _is_group(root, o.split("=", 1)[0].lstrip("+~"))]


def _explain(message: str, config_name: str, overrides: Sequence[str]) -> str:
    """Hydra's message without its internals, plus the nearest key for a misspelt one (Hydra
    itself lists a group's options when an option is misspelt)."""
    message = message.split("Config search path:")[0].strip()
    text = f"invalid config: {message}"
    if "not in struct" in message or "Could not override" in message or "Key '" in message:
        text += "\nhint: " + _nearest_key_hint(message, config_name, overrides)
    return text


def _nearest_key_hint(message: str, config_name: str, overrides: Sequence[str]) -> str:
    wrong = next((o.split("=", 1)[0].lstrip("+~") for o in overrides if f"'{o.split('=', 1)[0]}'" in message), None)
    known: list[str] = []
    if wrong is not None:
        try:
            known = list(_leaf_keys(compose(config_name, _groups_only(_split(config_name)[0], overrides))))
        except ConfigError:
            known = []
    near = [k for k in difflib.get_close_matches(wrong, known, n=2, cutoff=0.6) if k != wrong][:1] if wrong else []
    text = f"did you mean {near[0]}? " if near else ""
    return text + (
        "the key does not exist in the config: check its spelling (print the whole config with --cfg job); "
        "to add a new key on purpose, prefix it with '+', e.g. +model.dropout=0.1"
    )


# --------------------------------------------------------------------------------------------
# types: the pre-flight check of the values a user gave


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# keys that take a count or an explicit list (``seeds=5`` or ``seeds=[3,4]``)
COUNT_OR_LIST_KEYS = frozenset({"seeds"})


def _fits(value: Any, like: Any) -> bool:
    """Whether ``value`` can stand where the packaged config has ``like``."""
    if like is None or value is None or isinstance(like, str) and like.startswith("${"):
        return True
    if isinstance(like, bool):
        return isinstance(value, bool)
    if isinstance(like, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(like, float):
        return _is_number(value)
    if isinstance(like, (list, ListConfig)):
        return isinstance(value, (list, ListConfig))
    return True


def _annotation_fits(value: Any, annotation: Any) -> bool | None:
    """Whether ``value`` fits a parameter annotation; ``None`` when the annotation says nothing
    this check can use."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        verdicts = [_annotation_fits(value, arg) for arg in typing.get_args(annotation)]
        if any(v is None for v in verdicts):
            return None
        return any(verdicts)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return _is_number(value)
    if annotation is str:
        return isinstance(value, str)
    return None


@lru_cache(maxsize=None)
def _signature(target: str) -> inspect.Signature | None:
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        return inspect.signature(obj)
    except Exception:  # noqa: BLE001 - a target that cannot be inspected is instantiate's to report
        return None


def _type_name(like: Any) -> str:
    return "list" if isinstance(like, (list, ListConfig)) else type(like).__name__


def check_types(cfg: DictConfig, defaults: DictConfig, keys: Sequence[str], *, signatures: bool = True) -> None:
    """Raise :class:`ConfigError` when a value given for one of ``keys`` has another type than
    the packaged default (``defaults``) or, with ``signatures``, than the ``_target_``'s
    signature asks for (which imports the target)."""
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(value, (DictConfig,)):
            continue
        like = OmegaConf.select(defaults, key, default=None, throw_on_missing=False)
        plain = OmegaConf.to_object(value) if isinstance(value, ListConfig) else value
        if key in COUNT_OR_LIST_KEYS and isinstance(plain, list) and all(_fits(v, like) for v in plain):
            continue
        if not _fits(plain, like):
            raise ConfigError(
                f"{key}={plain!r}: expected {_type_name(like)} (the default is {like!r}). "
                f"Pass a value of that type, e.g. {key}={like!r}."
            )
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        signature = _signature(target) if signatures and isinstance(target, str) else None
        if signature is None or name not in signature.parameters:
            continue
        annotation = signature.parameters[name].annotation
        if _annotation_fits(plain, annotation) is False:
            shown = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            raise ConfigError(f"{key}={plain!r}: {target} expects {name}: {shown}.")


def _first_of_sweep(overrides: Sequence[str]) -> list[str]:
    """Each sweep override (``seed=0,1``, ``range(3)``) replaced by its first value, so the
    config of the first job can be checked before the sweep starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    single = []
    for text, override in zip(overrides, parser.parse_overrides(list(overrides))):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            single.append(f"{override.get_key_element()}={first}")
        else:
            single.append(text)
    return single


def check_overrides(config_name: str, overrides: Sequence[str], *, signatures: bool = True) -> DictConfig:
    """Compose ``config_name`` with ``overrides`` (sweeps at their first value) and check the
    types of the given values (see :func:`check_types`); returns the composed config.

    Raises:
        ConfigError: see :func:`compose` and :func:`check_types`.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    mine = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        single = _first_of_sweep(mine)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"invalid override: {err}") from err
    cfg = compose(config_name, single)
    groups = _groups_only(_split(config_name)[0], single)
    keys = [o.split("=", 1)[0].lstrip("+") for o in single if o not in groups and not o.startswith("~")]
    check_types(cfg, compose(config_name, groups), keys, signatures=signatures)
    return cfg


# --------------------------------------------------------------------------------------------
# running an app


def run_app(prog: str, config_name: str, task: str, argv: Sequence[str]) -> int:
    """Run ``qimia <prog> argv...`` as the Hydra app ``config_name`` (``"<root>/<config>"``) with
    task function ``task``; the job is named after the command (``"dual mnist"`` ->
    ``dual_mnist``), which names its output folder.

    Returns the exit status: 0, 1 for a failed job Hydra reported, 2 for a user error.
    """
    from hydra._internal.utils import _run_hydra, get_args_parser

    root, name = _split(config_name)
    args_parser = get_args_parser()
    args_parser.prog = f"qimia {prog}"
    args = args_parser.parse_intermixed_args(list(argv))  # flags anywhere: `qimia train seed=0,1 -m`
    if args.config_dir is None:
        args.config_dir = str(config_dir("shared"))
    args.overrides = [f"hydra.job.name={prog.replace(' ', '_')}", *args.overrides]
    full_error = os.environ.get(FULL_ERROR_ENV) == "1"
    if not (args.help or args.hydra_help or args.info or args.shell_completion):
        try:
            check_overrides(config_name, args.overrides[1:], signatures=args.cfg is None)
        except ConfigError as err:
            if full_error:
                raise
            print(f"qimia {prog}: error: {err}", file=sys.stderr)
            return 2

    def job(cfg: DictConfig) -> Any:
        from hydra.errors import InstantiationException
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        try:
            return load_function(task)(cfg)
        except (*USER_ERRORS, InstantiationException, MisconfigurationException) as err:
            if full_error:
                raise
            print(f"qimia {prog}: error: {type(err).__name__}: {err}\n"
                  f"(set {FULL_ERROR_ENV}=1 for the full traceback)", file=sys.stderr)
            raise SystemExit(2) from None

    job.__module__ = __name__
    try:
        _run_hydra(args=args, args_parser=args_parser, task_function=job, config_path=str(config_dir(root)),
                   config_name=name)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0
