"""Sequence labelling with Adaptive Computation Time: the task of the Universal Transformer
(Dehghani et al., 2019) and its fixed-depth baselines on generated sequences
(:mod:`qimia.data.sequence_tasks`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from qimia.attention.universal import ponder_loss
from qimia.training.base import TaskModule


class SequenceLabellingModule(TaskModule):
    """Cross-entropy over the real positions of ``net(src, mask) -> (logits (B, T, V), ACTInfo)``
    plus the ACT ponder cost ``tau * mean(N + R)`` (Graves, 2016, eq. 12).

    Logged per split: ``loss``, ``token_acc`` (over real tokens), ``seq_acc`` (every real token
    right) and ``ponder_steps`` (mean ``N`` over real tokens).

    Args:
        net: :class:`~qimia.attention.universal.UniversalTransformer` or ``DeepTransformer``.
        tau: weight of the ponder cost (0: none, as for the models without ACT).
        test_splits: names of the test dataloaders, in order (the data module's ``test_splits``).
        **kwargs: ``optimizer``, ``scheduler`` (see :class:`~qimia.training.base.TaskModule`).
    """

    monitor, monitor_mode = "token_acc", "max"

    def __init__(self, net: nn.Module, tau: float = 0.0, test_splits: Sequence[str] = ("test",),
                 **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}.")
        self.tau, self.test_splits = tau, tuple(test_splits)

    def step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        src, tgt, mask = batch  # (B, T) each; mask True on real tokens
        logits, info = self.net(src, mask)  # (B, T, V)
        loss = F.cross_entropy(logits[mask], tgt[mask])
        if self.tau > 0:
            loss = loss + ponder_loss(info, self.tau, mask.float())
        right = (logits.argmax(-1) == tgt) | ~mask
        tokens = int(mask.sum())
        train = stage == "train"
        sync = not train
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=True, sync_dist=sync,
                 batch_size=tokens, add_dataloader_idx=False)
        self.log(f"{stage}/token_acc", (right & mask).sum() / tokens, on_step=False, on_epoch=True, prog_bar=True,
                 sync_dist=sync, batch_size=tokens, add_dataloader_idx=False)
        self.log(f"{stage}/seq_acc", right.all(1).float().mean(), on_step=False, on_epoch=True, sync_dist=sync,
                 batch_size=len(src), add_dataloader_idx=False)
        self.log(f"{stage}/ponder_steps", (info.steps * mask).sum() / tokens, on_step=False, on_epoch=True,
                 sync_dist=sync, batch_size=tokens, add_dataloader_idx=False)
        return loss

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.step(batch, self.test_splits[dataloader_idx])
