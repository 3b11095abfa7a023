"""From a composed config to the objects of a run: data module, network, task module, trainer.

    dm = build_datamodule(cfg)                  # cfg.data, seeded with cfg.seed
    net = build_net(cfg, dm)                    # qimia.models.create_model(cfg.model.name, ...)
    module = build_task(cfg, net, dm)           # ClassificationModule / LanguageModelModule / ...
    trainer = build_trainer(cfg, output_dir, callbacks)
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from qimia.data.base import SplitDataModule
from qimia.training import TASKS, TaskModule
from qimia.training.engine import optimizer_factory, scheduler_factory


def build_datamodule(cfg: DictConfig) -> SplitDataModule:
    """Instantiate ``cfg.data`` with the run's seed (training shuffle only; splits are fixed)."""
    datamodule = instantiate(cfg.data, seed=cfg.seed)
    if not hasattr(datamodule, "net_kwargs"):
        raise TypeError(f"data._target_ {cfg.data._target_!r} is not a qimia data module (no net_kwargs).")
    return datamodule


def model_kwargs(cfg: DictConfig, datamodule: SplitDataModule) -> dict[str, Any]:
    """``cfg.model`` (minus ``name``), overridden by ``tiny_kwargs`` when ``cfg.tiny``, then by
    what the data dictates.

    Raises:
        ValueError: the model config states a data-derived kwarg (``num_classes``, ``in_chans``,
            ``vocab_size``, ``block_size``) with another value than the data's, or contradicts a
            kwarg the model name fixes (``model.name=qimia_resnet20`` with ``model.mixer=residual``).
    """
    from qimia.models import fixed_kwargs, tiny_kwargs

    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    name = model.pop("name")
    clashes = {k: (model[k], v) for k, v in fixed_kwargs(name).items() if k in model and model[k] != v}
    if clashes:
        detail = ", ".join(f"model.{k}={mine!r} but {name} fixes {k}={fixed!r}" for k, (mine, fixed) in clashes.items())
        fix = " ".join(f"model.{k}={fixed}" for k, (_, fixed) in clashes.items())
        raise ValueError(
            f"{detail}. The model config group sets these for its base model; add the overrides `{fix}` "
            "(or keep the base name and change only the option)."
        )
    from_data = datamodule.net_kwargs
    for key, value in from_data.items():
        if key in model and model[key] is not None and model[key] != value:
            raise ValueError(
                f"model.{key}={model[key]} but the data gives {key}={value}: drop model.{key}, it is taken from the data."
            )
    tiny = tiny_kwargs(name) if cfg.tiny else {}
    return {**model, **tiny, **from_data}


def build_net(cfg: DictConfig, datamodule: SplitDataModule, **overrides: Any) -> nn.Module:
    """``create_model(cfg.model.name, **model_kwargs(cfg, datamodule), **overrides)``."""
    from qimia.models import create_model

    data_task = getattr(datamodule, "task", None)
    mismatch = (
        f"model={cfg.model.name} and data={type(datamodule).__name__} do not fit: the data serves task "
        f"{data_task!r}. Pick a model and data of the same task (see `qimia.list_models()` and conf/data/)."
    )
    try:
        net = create_model(cfg.model.name, **{**model_kwargs(cfg, datamodule), **overrides})
    except TypeError as err:
        raise TypeError(f"{err} {mismatch}") from err
    if net.task != data_task:
        raise ValueError(f"{cfg.model.name} solves {net.task!r}: {mismatch}")
    return net


def build_task(cfg: DictConfig, net: nn.Module, datamodule: SplitDataModule) -> TaskModule:
    """The LightningModule of ``net.task``, with the optimizer and scheduler factories of the config."""
    task = getattr(net, "task", None)
    if task not in TASKS:
        raise ValueError(f"{type(net).__name__}.task is {task!r}; the pipeline trains tasks {sorted(TASKS)}.")
    extra = {**getattr(datamodule, "task_kwargs", {}), **OmegaConf.to_container(cfg.task, resolve=True)}
    return TASKS[task](net=net, optimizer=optimizer_factory(cfg), scheduler=scheduler_factory(cfg),
                       compile=bool(cfg.compile), **extra)
