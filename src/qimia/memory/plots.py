"""Figures of a ``qimia memory`` run: the learning curve and the read/write weightings over time.

:func:`pyplot` is this package's one matplotlib preamble (the non-interactive Agg backend).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from qimia.data.algorithmic import AlgorithmicTask
from qimia.plotting import pyplot, save_figure


def epoch_means(train: list[dict[str, float]], curve: list[dict[str, float]]) -> list[dict[str, float]]:
    """The mean training ``bits`` of the logged steps between two evaluations, at the later one
    (single steps are noisy: every batch has another length)."""
    means, start = [], 0
    for point in curve:
        window = [p["bits"] for p in train if start < p["step"] <= point["step"]]
        if window:
            means.append({"sequences": point["sequences"], "bits": sum(window) / len(window)})
        start = point["step"]
    return means


def plot_curve(curve: list[dict[str, float]], train: list[dict[str, float]], title: str, path: Path) -> None:
    """Bits and wrong bits per sequence against training sequences (log y): the evaluation at the
    training lengths (``curve``: ``step``, ``sequences``, ``bits``, ``wrong_bits``) and the mean
    training loss between evaluations (``train``: ``step``, ``bits`` of the logged steps)."""
    if not curve:
        return
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    means = epoch_means(train, curve)
    ax[0].plot([p["sequences"] for p in means], [max(p["bits"], 1e-4) for p in means], alpha=0.6,
               label="train (mean of the logged steps)")
    for i, key in enumerate(("bits", "wrong_bits")):
        floor = 1e-4 if key == "bits" else 1e-3  # log axis: show exact zeros at the floor
        ax[i].plot([p["sequences"] for p in curve], [max(p[key], floor) for p in curve],
                   label="eval (fresh sequences, every training length)")
        ax[i].set(yscale="log", xlabel="training sequences")
        ax[i].ticklabel_format(axis="x", style="sci", scilimits=(3, 3))
    ax[0].set_ylabel("cross-entropy (bits / sequence)")
    ax[1].set_ylabel("wrong bits / sequence")
    ax[1].axhline(0.1, ls="--", c="gray")
    ax[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


@torch.no_grad()
def plot_weightings(model: nn.Module, task: AlgorithmicTask, length: int, path: Path) -> bool:
    """Inputs, outputs and the model's weightings over time on one sequence of ``length`` (as in
    the NTM paper, fig. 6). Returns ``False`` (and draws nothing) for a model without memory."""
    device = next(model.parameters()).device
    batch = task.sample(1, length, torch.Generator().manual_seed(123))
    was_training = model.training
    model.eval()
    logits, _, states = model(batch.inputs.to(device), trace=True)
    model.train(was_training)
    panels = {"inputs": batch.inputs[0].T, "outputs": torch.sigmoid(logits[0].float()).T,
              **model.weightings(states)}
    if len(panels) == 2:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for ax, (title, image) in zip(axes.flat, panels.items()):
        ax.imshow(image.cpu().numpy(), aspect="auto", cmap="gray_r", interpolation="nearest")
        ax.set_title(title)
    for ax in axes[1]:
        ax.set(xlabel="time", ylabel="memory row")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    return True
