"""Compose the packaged Hydra config from plain ``key=value`` overrides.

``qimia train`` / ``qimia compare`` call :func:`compose_config` with their argv: Hydra's compose
API (no working-directory change, no Hydra run folder), the configs read from the installed
package, so the commands work from any directory. Composition errors (an unknown key, an unknown
option of a group) become a :class:`ConfigError` that says what to do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_NAME = "qimia"
GROUPS = ("model", "data", "trainer", "optimizer", "scheduler", "experiment")
STAMP_ENV = "QIMIA_RUN_STAMP"


class ConfigError(ValueError):
    """A config could not be composed from the given overrides."""


def config_dir() -> Path:
    """The packaged ``qimia/conf`` folder."""
    return Path(str(resources.files("qimia") / "conf"))


def run_stamp() -> str:
    """A timestamp fixed for the whole process tree: DDP workers (re-launched with the parent's
    environment) resolve ``${qimia_stamp:}`` to the same folder as rank 0."""
    return os.environ.setdefault(STAMP_ENV, time.strftime("%Y-%m-%d_%H-%M-%S"))


if not OmegaConf.has_resolver("qimia_stamp"):
    OmegaConf.register_new_resolver("qimia_stamp", run_stamp)


def group_options(group: str) -> list[str]:
    """Names of the packaged configs of one group (``model``, ``data``, ...)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The composed config for ``overrides`` such as ``["experiment=mnist_resnet", "seeds=3"]``.

    Raises:
        ConfigError: unknown key, unknown group option or malformed override.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    bad = [o for o in overrides if "=" not in o and not o.startswith("~")]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}; run with --help for the options.")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="qimia"):
            return compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_explain(str(err))) from err
    finally:
        GlobalHydra.instance().clear()


def _explain(message: str) -> str:
    message = message.split("Config search path:")[0]  # Hydra internals: noise for a user
    first = message.strip().splitlines()[0] if message.strip() else message
    hints = []
    if "not in struct" in message or "Could not override" in message or "Key '" in message:
        hints.append(
            "the key does not exist in the config: check its spelling (print the whole config with "
            "--cfg); to add a new model kwarg on purpose, prefix it with '+', e.g. +model.dropout=0.1"
        )
    for group in GROUPS:
        if f"'{group}/" in message or f"in '{group}'" in message:
            hints.append(f"available {group} options: {group_options(group)}")
    detail = "\n".join(message.strip().splitlines()[1:])
    text = f"invalid config: {first}"
    if detail:
        text += "\n" + detail
    if hints:
        text += "\nhint: " + "\nhint: ".join(hints)
    return text


def describe_groups() -> str:
    """One line per config group with its options, for ``--help``."""
    return "\n".join(f"  {group + '=':<12} {', '.join(group_options(group))}" for group in GROUPS)
