r"""Explain test predictions by the attention they pay to training slots (streamed).

For a query ``x`` (the input a recorded layer sees for a test example) each training slot
``i`` contributes ``e_i (c_i (x_i . x) + c^b_i)`` to the layer's output (exact dual form).
Two scores per slot are offered:

* ``"contribution"`` (exact stores, default): ``||e_i|| * |c_i (x_i . x) + c^b_i|``, the norm
  of the slot's exact contribution to ``W_T x + b_T``.
* ``"key"``: ``|x_i . x|``, the raw key-query dot product. This is the only score a
  keys-only store supports and is what the original authors' analysis uses; it ignores
  the values and coefficients and is therefore labelled APPROXIMATE.

The analysis (per-class totals, Table 1, class x task groups) follows Irie, Csordás and
Schmidhuber 2022, "The Dual Form of Neural Networks Revisited: Connecting Test Time Predictions
to Training Patterns via Spotlights of Attention" (ICML 2022).

Scores are computed in blocks of at most ``max_block`` elements (queries x slots) on the
device of the explainer, never materialising the full ``(M, N)`` matrix unless asked to
(:meth:`DualExplainer.attention`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qimia.dual import layers as L
from qimia.dual.reconstruct import Keep, layer_coefficients, resolve_keep
from qimia.dual.store import LABEL, DualStore, iter_chunks, to_tensor

SCORES = ("contribution", "key")


@dataclass
class Explanation:
    """Summary of the attention of ``M`` queries over the ``N`` slots of one layer.

    Attributes:
        score: the score used (``"key"`` means approximate).
        topk_scores: ``(M, k)`` largest scores.
        topk_slots: ``(M, k)`` their slot indices (rows of ``store.meta(layer)``).
        class_totals: ``(M, C)`` score summed per training label (None if not asked).
        group_totals: ``(M, G)`` score summed per value of the ``group_by`` column(s).
        group_ids: ``(G,)`` the sorted values of the ``group_by`` column, or ``(G, c)`` the sorted
            distinct rows of ``c`` columns.
        total: ``(M,)`` total score over kept slots.
    """

    score: str
    topk_scores: torch.Tensor
    topk_slots: torch.Tensor
    class_totals: torch.Tensor | None
    group_totals: torch.Tensor | None
    group_ids: np.ndarray | None
    total: torch.Tensor

    @property
    def approximate(self) -> bool:
        return self.score == "key"


class DualExplainer:
    """Streamed attention of test queries over the memory of one layer.

    Args:
        store: the recorded memory.
        layer: layer name or index (0 = input layer).
        score: ``"contribution"`` (exact, default for exact stores) or ``"key"`` (approximate).
        device: where blocks are scored (``"cpu"`` or ``"cuda"``).
        max_block: most score elements (queries x slots) held at once.
    """

    def __init__(self, store: DualStore, layer: str | int, *, score: str | None = None,
                 device: torch.device | str = "cpu", max_block: int = 1 << 24) -> None:
        score = score or ("key" if store.keys_only else "contribution")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}.")
        if score == "contribution" and store.keys_only:
            raise ValueError("a keys-only store has no values/coefficients; use score='key' (approximate).")
        self.store, self.spec, self.score = store, store.layer(layer), score
        self.device, self.max_block = torch.device(device), max_block
        self.meta = store.meta(self.spec.name)                                       # (N, 6)

    @property
    def num_slots(self) -> int:
        return self.meta.shape[0]

    def stream(self, queries: torch.Tensor, keep: Keep = None,
               scores: tuple[str, ...] | None = None) -> Iterator[tuple[int, torch.Tensor | dict[str, torch.Tensor]]]:
        """Yield ``(offset, scores)`` with ``scores`` ``(M, n)`` for consecutive slot blocks (masked -> 0).

        With ``scores=("contribution", "key")`` one pass yields ``{score: (M, n)}`` for several scores
        (the expensive product ``x_i . x`` is shared).
        """
        if queries.ndim != 2 or queries.shape[1] != self.spec.d_key:
            raise ValueError(f"queries must have shape (M, {self.spec.d_key}) for layer {self.spec.name}, "
                             f"got {tuple(queries.shape)}.")
        names = scores or (self.score,)
        for name in names:
            if name not in SCORES or (name == "contribution" and self.store.keys_only):
                raise ValueError(f"score {name!r} is not available here; use one of "
                                 f"{('key',) if self.store.keys_only else SCORES}.")
        if "contribution" in names and not hasattr(self, "_cw"):
            co = layer_coefficients(self.store, self.spec.name)
            self._cw, self._cb = co.c_w.astype(np.float32), co.c_b.astype(np.float32)
        q = queries.to(self.device, torch.float32)                                   # (M, d_key)
        mask = resolve_keep(self.store, self.spec.name, keep)
        rows = max(1024, self.max_block // max(1, q.shape[0] * len(names)))
        for off, shard, lo, hi in iter_chunks(self.store, self.spec.name, rows):
            X = L.load_keys(self.spec, shard.keys[lo:hi], self.device, torch.float32)  # (n, d_key) or ids
            dot = L.key_dot(self.spec, q, X)                                         # (M, n)  x_i . x
            m = None if mask is None else torch.from_numpy(mask[off:off + hi - lo]).to(self.device, dot.dtype)
            out = {}
            for name in names:
                if name == "contribution":
                    sl = slice(off, off + hi - lo)
                    cw = torch.from_numpy(self._cw[sl]).to(self.device)
                    cb = torch.from_numpy(self._cb[sl]).to(self.device)
                    vn = to_tensor(shard.vnorm[lo:hi], self.device, torch.float32)
                    sc = (dot * cw + cb).abs_() * vn                                 # ||e_i|| |c_i x_i.x + c^b_i|
                else:
                    sc = dot.abs()                                                   # |x_i . x|
                out[name] = sc if m is None else sc * m
            yield off, (out if scores else out[self.score])

    def class_totals(self, queries: torch.Tensor, num_classes: int, scores: tuple[str, ...],
                     keep: Keep = None) -> dict[str, torch.Tensor]:
        """``{score: (M, C)}`` per-class totals for several scores in one streamed pass."""
        labels = self.meta[:, LABEL]
        totals = {s: torch.zeros(queries.shape[0], num_classes, device=self.device) for s in scores}
        for off, block in self.stream(queries, keep, scores=scores):
            lab = torch.from_numpy(labels[off:off + next(iter(block.values())).shape[1]]).to(self.device)
            valid = (lab >= 0) & (lab < num_classes)
            for name, sc in block.items():
                totals[name].index_add_(1, lab[valid], sc[:, valid])
        return {k: v.cpu() for k, v in totals.items()}

    def attention(self, queries: torch.Tensor, keep: Keep = None, max_elements: int = 1 << 27) -> torch.Tensor:
        """All ``(M, N)`` scores at once (guarded by ``max_elements``; prefer :meth:`explain`)."""
        M, N = queries.shape[0], self.num_slots
        if M * N > max_elements:
            raise ValueError(f"{M} x {N} scores exceed max_elements={max_elements}; use explain() (streamed) "
                             "or fewer queries.")
        out = torch.empty(M, N, device=self.device)
        for off, s in self.stream(queries, keep):
            out[:, off:off + s.shape[1]] = s
        return out

    def explain(self, queries: torch.Tensor, *, k: int = 10, num_classes: int | None = None,
                group_by: int | Sequence[int] | None = None, keep: Keep = None) -> Explanation:
        """Top-``k`` slots, per-class totals and per-group totals in one streamed pass.

        Args:
            queries: ``(M, d_key)`` layer inputs of the test examples.
            k: number of top slots.
            num_classes: if given, totals per training label ``0..C-1`` (label column).
            group_by: metadata column (e.g. :data:`~qimia.dual.store.TASK`) to total by, or several
                columns: one group per distinct combination, e.g. ``(LABEL, TASK)`` gives the
                paper's class x task groups; ``group_ids`` is then ``(G, len(group_by))``.
            keep: slots to keep (bool ``(N,)`` or a function of the metadata).
        """
        M = queries.shape[0]
        dev = self.device
        k = min(k, self.num_slots)
        top_s = torch.full((M, 0), -1.0, device=dev)
        top_i = torch.zeros((M, 0), dtype=torch.int64, device=dev)
        class_totals = torch.zeros(M, num_classes, device=dev) if num_classes else None
        group_ids = group_index = group_totals = None
        if group_by is not None:
            columns = [group_by] if isinstance(group_by, int) else list(group_by)
            group_ids, group_index = np.unique(self.meta[:, columns], axis=0, return_inverse=True)
            group_ids, group_index = (group_ids[:, 0] if isinstance(group_by, int) else group_ids), group_index.reshape(-1)
            group_totals = torch.zeros(M, len(group_ids), device=dev)
        total = torch.zeros(M, device=dev)
        labels = self.meta[:, LABEL]
        for off, s in self.stream(queries, keep):
            n = s.shape[1]
            total += s.sum(1)
            cand_s, cand_i = torch.topk(s, min(k, n), dim=1)                         # (M, k)
            top_s, pos = torch.topk(torch.cat([top_s, cand_s], 1), min(k, top_s.shape[1] + cand_s.shape[1]), 1)
            top_i = torch.gather(torch.cat([top_i, cand_i + off], 1), 1, pos)
            if class_totals is not None:
                lab = torch.from_numpy(labels[off:off + n]).to(dev)
                valid = (lab >= 0) & (lab < num_classes)
                class_totals.index_add_(1, lab[valid], s[:, valid])
            if group_totals is not None:
                group_totals.index_add_(1, torch.from_numpy(group_index[off:off + n]).to(dev), s)
        return Explanation(self.score, top_s.cpu(), top_i.cpu(),
                           None if class_totals is None else class_totals.cpu(),
                           None if group_totals is None else group_totals.cpu(), group_ids, total.cpu())

    def class_topk(self, query: torch.Tensor, num_classes: int, k: int = 500, keep: Keep = None) -> torch.Tensor:
        """``(C, k)`` largest scores per training class for one query ``(d_key,)`` (NaN-padded), sorted."""
        best = [torch.empty(0, device=self.device) for _ in range(num_classes)]
        labels = self.meta[:, LABEL]
        for off, s in self.stream(query.reshape(1, -1), keep):
            lab = torch.from_numpy(labels[off:off + s.shape[1]]).to(self.device)
            for c in range(num_classes):
                cand = torch.cat([best[c], s[0, lab == c]])
                best[c] = torch.topk(cand, min(k, cand.numel())).values
        out = torch.full((num_classes, k), float("nan"))
        for c, b in enumerate(best):
            out[c, : b.numel()] = b.cpu()
        return out


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor, layers: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run ``model(x)`` in eval mode and return ``({layer: (M * uses * rows, d_key) queries}, output)``.

    Queries are what the layer's keys are (:mod:`qimia.dual.layers`): input rows of a Linear,
    input patches of a convolution (one row per output position), one-hot tokens of an embedding,
    ``x_t`` / ``h_{t-1}`` of an LSTM view (one row per time step).
    """
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    handle = L.watch(model, layers, lambda n, m, a, o: captured[n].append(L.query_rows(m, a)))
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    finally:
        model.train(was_training)
        handle.remove()
    return {n: torch.cat(v) for n, v in captured.items()}, out


def layer_inputs_and_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                            layers: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per layer ``(M, d_key)`` inputs and ``(M, d_value)`` per-example test errors ``dL(x_m, y_m)/dy``.

    Uses cross-entropy with ``reduction="sum"`` so that row ``m`` is example ``m``'s own gradient
    (single-use layers; eval mode, parameters untouched). While a ``DualRecorder`` is attached
    (it records eval-mode passes with gradients too), call this inside ``rec.paused()``.
    """
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, tuple[nn.Module | None, torch.Tensor]] = {}

    def on_use(n: str, m: nn.Module | None, a: torch.Tensor, o: torch.Tensor) -> None:
        inputs[n] = L.query_rows(m, a)                                               # (M * rows, d_key)
        o.retain_grad()
        outputs[n] = (m, o)

    handle = L.watch(model, layers, on_use)
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
            loss.backward(inputs=list({id(o): o for _, o in outputs.values()}.values()))  # LSTM views share z_x
    finally:
        model.train(was)
        handle.remove()
    return inputs, {n: L.output_rows(m, o.grad) for n, (m, o) in outputs.items()}


def example_scores(store: DualStore, layer: str | int, queries: torch.Tensor, test_errors: torch.Tensor,
                   num_examples: int, *, device: torch.device | str = "cpu", max_block: int = 1 << 24) -> torch.Tensor:
    r"""``(M, num_examples)`` exact first-order effect of each training example on each test loss.

    Slot ``i`` adds ``e_i (c_i x_i.x + c^b_i)`` to the layer output at test input ``x``; with the test
    error ``g = dL_test/dy`` its first-order effect on the test loss is ``g . e_i (c_i x_i.x + c^b_i)``.
    We return ``-`` that, summed over the slots of each training example (positive = the example
    lowered the test loss). Summed over all examples it equals ``-g . (y - a_W W_0 x - a_b b_0)``
    exactly: this is the dual form's TracIn-like score, with every step as a "checkpoint".
    """
    from qimia.dual.store import EXAMPLE

    spec = store.layer(layer)
    co = layer_coefficients(store, spec.name)
    ex_ids = store.meta(spec.name)[:, EXAMPLE]
    if ex_ids.max(initial=-1) >= num_examples or ex_ids.min(initial=0) < 0:
        raise ValueError(f"slot example ids span [{ex_ids.min()}, {ex_ids.max()}], outside [0, {num_examples}).")
    q = queries.to(device, torch.float32)                                             # (M, d_key)
    g = test_errors.to(device, torch.float32)                                         # (M, d_value)
    out = torch.zeros(q.shape[0], num_examples, device=device)
    rows = max(1024, max_block // max(1, q.shape[0]))
    for off, shard, lo, hi in iter_chunks(store, spec.name, rows):
        X = L.load_keys(spec, shard.keys[lo:hi], device, torch.float32)              # (n, d_key) or ids
        E = to_tensor(shard.values[lo:hi], device, torch.float32)                    # (n, d_value)
        sl = slice(off, off + hi - lo)
        w = L.key_dot(spec, q, X) * torch.from_numpy(co.c_w[sl]).to(device, torch.float32) \
            + torch.from_numpy(co.c_b[sl]).to(device, torch.float32)                 # (M, n) attention weights
        out.index_add_(1, torch.from_numpy(ex_ids[sl]).to(device), -(w * (g @ E.T)))  # (M, n) -> examples
    return out.cpu()
