"""Figures like the paper's (Irie, Csordás, Schmidhuber 2022, "The Dual Form of Neural Networks
Revisited: Connecting Test Time Predictions to Training Patterns via Spotlights of Attention", ICML
2022): for one test example and each layer, the top-k attention scores of each training class sorted
in decreasing order (left) and the total per class (right). PNG and PDF (:mod:`qimia.plotting`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from qimia.plotting import pyplot, save_figure


def plot_example(class_topk: Mapping[str, torch.Tensor], class_totals: Mapping[str, torch.Tensor],
                 path: str | Path, *, title: str = "", class_names: Sequence[str] | None = None) -> Path:
    """Save a PNG with one row per layer.

    Args:
        class_topk: ``{layer: (C, k)}`` sorted top-k scores per class (NaN where a class has < k slots).
        class_totals: ``{layer: (C,)}`` total score per class.
        path: output PNG path (a PDF copy is written beside it).
    """
    plt = pyplot()
    layers = list(class_topk)
    fig, axes = plt.subplots(len(layers), 2, figsize=(10, 2.8 * len(layers)), squeeze=False)
    for row, layer in enumerate(layers):
        topk, totals = class_topk[layer], class_totals[layer]
        C, k = topk.shape
        names = list(class_names) if class_names else [str(c) for c in range(C)]
        cmap = plt.get_cmap("tab10")
        ax = axes[row, 0]
        for c in range(C):
            ax.plot(range(1, k + 1), topk[c].numpy(), color=cmap(c % 10), lw=1.2, label=names[c])
        ax.set_title(f"{layer}: top-{k} scores per training class")
        ax.set_xlabel("rank")
        ax.set_ylabel("score")
        ax.legend(fontsize=6, ncol=2)
        ax = axes[row, 1]
        ax.bar(range(C), totals.numpy(), color=[cmap(c % 10) for c in range(C)])
        ax.set_xticks(range(C), names, fontsize=7)
        ax.set_title(f"{layer}: total score per class")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    return Path(path).with_suffix(".png")


def plot_group_shares(shares: Mapping[str, Mapping[str, float]], path: str | Path, *, title: str = "") -> Path:
    """Save a PNG with one bar chart per layer: the mean share of the attention that test examples
    give to each (class, task) group of training slots (the multi-task analysis of the paper).

    Args:
        shares: ``{layer: {"<class>,<task>": mean share}}`` (``share_groups`` of
            :func:`qimia.dual.experiments.multitask.group_shares`); bars are coloured by task.
        path: output PNG path (a PDF copy is written beside it).
    """
    plt = pyplot()
    layers = list(shares)
    fig, axes = plt.subplots(len(layers), 1, figsize=(10, 2.4 * len(layers)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for row, layer in enumerate(layers):
        groups = sorted(shares[layer], key=lambda g: tuple(int(v) for v in g.split(",")[::-1]))  # task, then class
        tasks = [int(g.split(",")[1]) for g in groups]
        ax = axes[row, 0]
        ax.bar(range(len(groups)), [shares[layer][g] for g in groups], color=[cmap(t % 10) for t in tasks])
        ax.set_xticks(range(len(groups)), [f"c{g.split(',')[0]}/t{g.split(',')[1]}" for g in groups], fontsize=6)
        ax.set_ylabel("mean share")
        ax.set_title(f"{layer}: share of the attention per (class, task) group of training slots")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    return Path(path).with_suffix(".png")
