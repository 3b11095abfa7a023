"""The Recurrent Attention Model's task: the hybrid loss of Mnih et al. (2014), trained by Lightning.

Training uses sampled glimpse locations and the hybrid loss
:func:`~qimia.attention.ram.ram_loss` (``NLL + REINFORCE with the learned baseline + baseline
MSE``; reward 1 for a correct class), one optimizer for all of it (no manual optimisation:
the sampled locations are detached inside the model, so each term reaches only its own
sub-network). Validation and test classify with the policy mean (no sampling) from a first
location drawn by a generator reset to ``eval_seed`` at the start of every evaluation, so every
evaluation of the same weights gives the same number.

Logged: ``train/{loss,nll,reinforce,baseline_mse,acc}`` and ``{val,test}/{error,nll}``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from qimia.attention.ram import RecurrentAttentionModel, ram_loss
from qimia.training.base import TaskModule


class RAMModule(TaskModule):
    """REINFORCE-trained hard attention.

    Args:
        net: a :class:`~qimia.attention.ram.RecurrentAttentionModel`.
        eval_seed: seed of the first glimpse location (and of the sampled ones) in validation and test.
        mc_samples: ``0`` classifies with the policy mean; ``M > 0`` averages the class
            log-probabilities of ``M`` sampled glimpse trajectories per image (Monte-Carlo test
            sampling: ``M = 10`` in kevinzakka/recurrent-visual-attention).
        reinforce_weight: weight of the REINFORCE term of :func:`~qimia.attention.ram.ram_loss`.
        **kwargs: ``optimizer``, ``scheduler`` (see :class:`~qimia.training.base.TaskModule`).
    """

    monitor, monitor_mode = "error", "min"

    def __init__(self, net: RecurrentAttentionModel, eval_seed: int = 0, mc_samples: int = 0,
                 reinforce_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        if mc_samples < 0:
            raise ValueError(f"mc_samples must be >= 0 (0: the policy mean), got {mc_samples}.")
        if reinforce_weight < 0:
            raise ValueError(f"reinforce_weight must be >= 0, got {reinforce_weight}.")
        self.eval_seed, self.mc_samples, self.reinforce_weight = eval_seed, mc_samples, reinforce_weight
        self._eval_generator = torch.Generator().manual_seed(eval_seed)

    def _reset_eval_generator(self) -> None:
        self._eval_generator = torch.Generator().manual_seed(self.eval_seed)

    def on_validation_epoch_start(self) -> None:
        self._reset_eval_generator()

    def on_test_epoch_start(self) -> None:
        self._reset_eval_generator()

    @torch.no_grad()
    def classify(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Class log-probabilities ``(B, K)`` and glimpse locations ``(B, T, 2)``: with the policy
        mean, or (``mc_samples = M``) the mean log-probabilities of ``M`` sampled trajectories and
        the first one's locations; every draw from the evaluation generator."""
        if self.mc_samples == 0:
            state = self.net.initial_state(images, self._eval_generator)
            logits, _, _, locations = self.net(images, sample=False, state=state)
            return logits.log_softmax(-1), locations
        B, M = images.shape[0], self.mc_samples
        repeated = images.repeat(M, 1, 1, 1)  # (M * B, C, H, W), sample m = rows m*B .. (m+1)*B - 1
        state = self.net.initial_state(repeated, self._eval_generator)
        logits, _, _, locations = self.net(repeated, sample=True, state=state, generator=self._eval_generator)
        log_probs = logits.log_softmax(-1).view(M, B, -1).mean(0)  # (B, K)
        return log_probs, locations[:B]

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch  # (B, C, H, W), (B,)
        n = len(labels)
        if stage == "train":
            logits, log_probs, baselines, _ = self.net(images)
            loss = ram_loss(logits, labels, log_probs, baselines, self.reinforce_weight)
            for name, value in (("loss", loss.total), ("nll", loss.classification), ("reinforce", loss.reinforce),
                                ("baseline_mse", loss.baseline), ("acc", loss.reward)):
                self.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name in ("nll", "acc"),
                         batch_size=n)
            return loss.total
        log_probs, _ = self.classify(images)
        nll = F.nll_loss(log_probs, labels)
        error = (log_probs.argmax(-1) != labels).float().mean()
        self.log(f"{stage}/error", error, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}/nll", nll, on_epoch=True, sync_dist=True, batch_size=n)
        return nll


class EpochHistory(L.Callback):
    """Every epoch's epoch-level metrics (``train/*_epoch``, ``val/*``) after its validation and the
    learning rate it trained with (``lr``, the first parameter group's): the learning curve; kept in
    checkpoints, so a resumed run's curve is whole."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step,
               "lr": trainer.optimizers[0].param_groups[0]["lr"]}  # epoch schedulers step after this hook
        for key, value in trainer.callback_metrics.items():
            if torch.as_tensor(value).numel() == 1 and not key.endswith("_step"):
                row[key.removesuffix("_epoch")] = float(value)
        self.epochs.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
