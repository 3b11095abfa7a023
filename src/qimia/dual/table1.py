"""The "Table 1" procedure: does the class that receives most attention match the target / output?

Table 1 of Irie, Csordás, Schmidhuber 2022, "The Dual Form of Neural Networks Revisited: Connecting
Test Time Predictions to Training Patterns via Spotlights of Attention" (ICML 2022).

For every test example and every recorded layer (layer 0 = input layer) the per-class total
of the attention scores over all training slots is computed (streamed); its argmax is
compared with the target label and with the model's prediction, separately for examples the
model gets right and wrong. Reported as percentages, mean +- std over seeds. Where the model
is right its output is the target, so "= output (model right)" would repeat "= target (model
right)" and is not reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.store import DualStore

METRICS = ("target_all", "output_all", "target_right", "target_wrong", "output_wrong")


def table1(model: nn.Module, store: DualStore, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
           scores: tuple[str, ...] = ("contribution",), device: str = "cpu",
           max_block: int = 1 << 24) -> dict[str, dict[str, dict[str, float]]]:
    """Per score and layer: % of test examples whose argmax per-class attention equals the target / output.

    Args:
        x: ``(M, ...)`` test inputs, ``y``: ``(M,)`` targets.
        scores: attention scores to evaluate (one streamed pass computes all of them).

    Returns:
        ``{score: {"layer<i>": {metric: percent, "n_right": int, "n_wrong": int}}}``.
    """
    queries, logits = layer_inputs(model, x, store.layer_names)
    pred = logits.argmax(-1).cpu()
    right = pred == y
    pct = lambda m: float(100.0 * m.float().mean()) if m.numel() else float("nan")  # noqa: E731
    out: dict[str, dict[str, dict[str, float]]] = {s: {} for s in scores}
    for name in store.layer_names:
        spec = store.layer(name)
        expl = DualExplainer(store, name, score=scores[0], device=device, max_block=max_block)
        for score, totals in expl.class_totals(queries[name], num_classes, scores).items():
            top = totals.argmax(1)                                                    # (M,)
            out[score][f"layer{spec.index}"] = {
                "target_all": pct(top == y), "output_all": pct(top == pred),
                "target_right": pct((top == y)[right]),          # = output on these: pred == y
                "target_wrong": pct((top == y)[~right]), "output_wrong": pct((top == pred)[~right]),
                "n_right": int(right.sum()), "n_wrong": int((~right).sum()),
            }
    return out


def aggregate(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """``{layer: {metric: [mean, std]}}`` over seeds (std with ddof=0 over the seeds given)."""
    agg: dict[str, dict[str, list[float]]] = {}
    for layer in per_seed[0]:
        agg[layer] = {}
        for m in METRICS + ("n_right", "n_wrong"):
            v = np.array([r[layer][m] for r in per_seed], dtype=float)
            v = v[~np.isnan(v)]            # e.g. no wrong predictions in a seed: that seed has no "wrong" row
            agg[layer][m] = [float(v.mean()), float(v.std())] if v.size else [float("nan"), float("nan")]
    return agg


def to_markdown(agg: dict[str, dict[str, list[float]]], n_seeds: int, score: str) -> str:
    """Markdown table: rows = layers, columns = target/output agreement for all, target for right, both for wrong."""
    label = score + (" (APPROXIMATE: keys only)" if score == "key" else " (exact)")
    lines = [f"Argmax of per-class total attention vs target / model output, % of test examples, "
             f"mean +- std over {n_seeds} seed(s); score = {label}.", "",
             "| layer | =target (all) | =output (all) | =target = output (model right) "
             "| =target (model wrong) | =output (model wrong) | #wrong |",
             "|---|---|---|---|---|---|---|"]
    for layer, m in agg.items():
        cells = [f"{m[k][0]:.1f} +- {m[k][1]:.1f}" for k in METRICS]
        lines.append(f"| {layer} | " + " | ".join(cells) + f" | {m['n_wrong'][0]:.0f} |")
    return "\n".join(lines) + "\n"
