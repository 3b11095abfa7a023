"""Task modules of the dual-form experiments (``qimia dual ...``): classification and character
language modelling on batches that also carry the example (and task) id of every row, which the
:class:`~qimia.dual.lightning.DualRecorderCallback` stores as slot metadata.

    module = RecordedClassificationModule(net, optimizer=factory)       # batches (x, y, ids, tasks)
    callback = DualRecorderCallback(path, batch_meta=classification_batch_meta)
    fit(cfg, module, run_dir, train_dataloaders=loader, callbacks=[callback])
    net = load_net(run_dir)                                            # the trained network again

The networks stay plain ``nn.Module``s built from ``cfg.model`` (a Hydra ``_target_``), so
:func:`load_net` rebuilds one from a run folder's ``config.yaml`` and ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.training.base import TaskModule
from qimia.training.tasks import LanguageModelModule


def classification_batch_meta(batch: tuple[Tensor, ...], batch_idx: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(images, labels, example ids, task ids)`` -> the recorder's ``(ids, labels, task)``."""
    return batch[2], batch[1], batch[3]


def language_model_batch_meta(batch: tuple[Tensor, ...], batch_idx: int) -> tuple[Tensor, Tensor, int]:
    """``(inputs (B, T), targets (B, T), window ids (B,))`` -> ``(ids, next-token targets, task 0)``."""
    return batch[2], batch[1], 0


class RecordedClassificationModule(TaskModule):
    """Cross-entropy on ``net(images) (B, C)`` for batches ``(images, labels, ids, tasks)``
    (training) or ``(images, labels)`` (evaluation). Logs ``<stage>/loss`` and ``<stage>/acc``
    (percent); with several validation loaders (one per task) ``val/acc_task<k>``.

    Args:
        **kwargs: ``net``, ``optimizer``, ``scheduler``, ``compile`` (see ``TaskModule``).
    """

    monitor, monitor_mode = "acc", "max"

    def step(self, batch: tuple[Tensor, ...], stage: str, suffix: str = "") -> Tensor:
        images, labels = batch[0], batch[1]  # (B, C, H, W), (B,)
        logits = self(images)  # (B, num_classes)
        loss = F.cross_entropy(logits, labels)
        accuracy = 100.0 * (logits.detach().argmax(-1) == labels).float().mean()
        train, n = stage == "train", len(labels)
        for name, value in (("loss", loss), ("acc", accuracy)):
            self.log(f"{stage}/{name}{suffix}", value, on_step=train, on_epoch=True, prog_bar=name == "loss" or not train,
                     batch_size=n, add_dataloader_idx=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.step(batch, "val", f"_task{dataloader_idx}")


class RecordedLanguageModelModule(LanguageModelModule):
    """:class:`~qimia.training.tasks.LanguageModelModule` for batches ``(inputs, targets, window
    ids)``; logs ``train/loss_step`` every step and ``loss``, ``ppl``, ``bpc`` per epoch."""

    def step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        return super().step((batch[0], batch[1]), stage)


def load_net(run_dir: str | Path, checkpoint: str = "last.ckpt") -> nn.Module:
    """The trained network of a dual-form run folder, rebuilt from ``config.yaml`` (its ``model``
    node) and ``checkpoints/<checkpoint>`` (read with ``weights_only=True``), in eval mode.

    Example:
        >>> net = load_net("outputs/dual_mnist/mnist_mlp/2026-12-01_10-00-00/seed0")  # doctest: +SKIP
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    config, ckpt = run_dir / "config.yaml", run_dir / "checkpoints" / checkpoint
    for path in (config, ckpt):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: pass the folder of one trained qimia dual run (seed<N>/).")
    net: Any = instantiate(OmegaConf.load(config).model)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return net.eval()
