"""The figures of ``qimia memory ram / ut / jacobian`` (PNG through matplotlib's Agg backend).

:func:`pyplot` is the one matplotlib preamble of these commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qimia.plotting import pyplot, save_figure


def plot_heatmap(values: Tensor, path: str | Path, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    """A 2-D tensor as a heat map."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(values.detach().cpu().numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def plot_glimpses(images: Tensor, locations: Tensor, predictions: Tensor, path: str | Path) -> None:
    """The glimpse path over each image: ``images (N, 1, H, W)``, ``locations (N, T, 2)`` in
    ``[-1, 1]^2`` (``(x, y)``, ``grid_sample``'s convention), predicted classes ``(N,)``; the
    first (random) location is green."""
    plt = pyplot()
    H, W = images.shape[-2:]
    fig, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.4), squeeze=False)
    for ax, img, loc, pred in zip(axes[0], images.cpu(), locations.cpu(), predictions.cpu()):
        ax.imshow(img[0].numpy(), cmap="gray")
        px = ((loc[:, 0] + 1) * W / 2 - 0.5).numpy()  # normalised -> pixel
        py = ((loc[:, 1] + 1) * H / 2 - 0.5).numpy()
        ax.plot(px, py, "-o", c="tab:red", ms=3)
        ax.plot(px[:1], py[:1], "o", c="tab:green", ms=5)
        ax.set_title(f"pred {int(pred)}")
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def plot_ram_curve(curve: Sequence[dict[str, float]], path: str | Path) -> None:
    """Validation error (policy mean) and training error (sampled glimpses) per epoch."""
    plt = pyplot()
    epochs = [c["epoch"] for c in curve]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [c["val/error"] for c in curve], "o-", label="validation error (policy mean)")
    ax.plot(epochs, [1 - c["train/acc"] for c in curve], "o-", alpha=0.6, label="train error (sampled glimpses)")
    ax.set(xlabel="epoch", ylabel="error", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def plot_ut_curves(runs: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Validation token accuracy and mean ponder steps against the training step, one line per run."""
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for run in runs:
        steps = [c["step"] for c in run["curve"]]
        label = f"{run['model']} s{run['seed']}"
        ax[0].plot(steps, [c["val/token_acc"] for c in run["curve"]], label=label)
        ax[1].plot(steps, [c["val/ponder_steps"] for c in run["curve"]], label=label)
    ax[0].set(xlabel="step", ylabel="validation token accuracy")
    ax[1].set(xlabel="step", ylabel="mean ponder steps N")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def sensitivity_grid(images: Tensor, maps: Tensor) -> Tensor:
    """Images ``(N, 1, H, W)`` above their sensitivity maps (each scaled to max 1): ``(2H, N W)``."""
    scaled = maps / maps.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)
    return torch.cat([torch.cat([img[0], m[0]], 0) for img, m in zip(images, scaled)], 1)
