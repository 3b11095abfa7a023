"""Figures like the paper's (Irie, Csordás, Schmidhuber 2022, "The Dual Form of Neural Networks
Revisited: Connecting Test Time Predictions to Training Patterns via Spotlights of Attention", ICML
2022): for one test example and each layer, the top-k attention scores of each training class sorted
in decreasing order (left) and the total per class (right). PNG via Agg."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch


def plot_example(class_topk: Mapping[str, torch.Tensor], class_totals: Mapping[str, torch.Tensor],
                 path: str | Path, *, title: str = "", class_names: Sequence[str] | None = None) -> Path:
    """Save a PNG with one row per layer.

    Args:
        class_topk: ``{layer: (C, k)}`` sorted top-k scores per class (NaN where a class has < k slots).
        class_totals: ``{layer: (C,)}`` total score per class.
        path: output PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
