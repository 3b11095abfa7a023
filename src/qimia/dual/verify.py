r"""Verify a dual-form store: every checksum, then the exact reconstruction of every layer.

Irie, Csordás, Schmidhuber (2022), "The Dual Form of Neural Networks Revisited": for an exact
store, ``W_T = a_0 W_0 + sum_t c_t e_t x_t^T`` must equal the trained weights. :func:`verify_store`
checks the manifest's own sha256, the sha256 of ``w0.pt`` and the checkpoint and the CRC32 of
every shard, then rebuilds each layer's weight and bias from ``W_0`` and the memory and compares
them with the weights in the store's last checkpoint::

    rel_err = ||W_rebuilt - W_T|| / ||W_T||        (float64, per parameter)

A store fails when any checksum fails, it cannot be opened or loaded, or any relative error
exceeds the tolerance. ``qimia dual verify`` prints :meth:`VerifyReport.to_dict` and exits
non-zero when :attr:`VerifyReport.ok` is false.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from qimia.dual.errors import StoreError, VerificationError
from qimia.dual.reconstruct import reconstruct_layer
from qimia.dual.store import DualStore

DEFAULT_TOLERANCE = 1e-5        # float32 / float64 stores (the documented exactness)
FLOAT16_TOLERANCE = 1e-2        # keys and values rounded to float16 on disk


@dataclass
class LayerCheck:
    """Reconstruction of one layer against the checkpoint.

    Attributes:
        slots: recorded slots of the layer.
        rel_err_weight: ``||W_rebuilt - W_T|| / ||W_T||``.
        rel_err_bias: the same for the bias (None without bias).
        ok: both errors are at most the report's tolerance.
    """

    slots: int
    rel_err_weight: float
    rel_err_bias: float | None
    ok: bool


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_store`.

    Attributes:
        path: the store directory.
        tolerance: the largest relative error accepted.
        steps: recorded steps (0 if the store could not be opened).
        bytes: size of the shards on disk.
        layers: per-layer reconstruction checks (empty for keys-only stores, or when checksums failed).
        problems: what failed (checksums, loading, layers above tolerance); empty when ``ok``.
    """

    path: str
    tolerance: float
    steps: int = 0
    bytes: int = 0
    layers: dict[str, LayerCheck] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every checksum held and every layer is within tolerance."""
        return not self.problems

    def raise_if_failed(self) -> None:
        """Raise :class:`VerificationError` listing the problems when the store failed."""
        if not self.ok:
            raise VerificationError(f"dual-form store {self.path} failed verification: " + "; ".join(self.problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (what ``qimia dual verify`` prints)."""
        return {"path": self.path, "ok": self.ok, "tolerance": self.tolerance, "steps": self.steps,
                "bytes": self.bytes, "layers": {n: asdict(c) for n, c in self.layers.items()},
                "problems": list(self.problems)}


def _rel_err(rebuilt: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.double()
    return float((rebuilt.double() - reference).norm() / reference.norm().clamp_min(1e-300))


def verify_store(path: str | os.PathLike, tolerance: float | None = None) -> VerifyReport:
    """Check every checksum of the store at ``path`` and the reconstruction error of every layer.

    Args:
        path: store directory.
        tolerance: largest accepted relative error per parameter; default :data:`DEFAULT_TOLERANCE`
            (``1e-5``), or :data:`FLOAT16_TOLERANCE` for a float16 store.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is False (and ``report.problems`` says why) when the
        store is missing or damaged, a checksum fails, a file cannot be loaded safely, or a layer's
        error exceeds the tolerance. Never raises for a bad store: call
        :meth:`VerifyReport.raise_if_failed` for an exception.
    """
    report = VerifyReport(path=str(path), tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance)
    try:
        store = DualStore.open(path, verify="full")
        report.steps, report.bytes = store.num_steps, store.nbytes()
        if tolerance is None and store.manifest["dtype"] == "float16":
            report.tolerance = FLOAT16_TOLERANCE
        if store.keys_only:
            return report
        state = store.load_checkpoint()["model"]
        for name in store.layer_names:
            spec = store.layer(name)
            W, b = reconstruct_layer(store, name)
            err_w = _rel_err(W, state[spec.weight])
            err_b = _rel_err(b, state[spec.bias]) if spec.bias is not None else None
            ok = err_w <= report.tolerance and (err_b is None or err_b <= report.tolerance)
            report.layers[name] = LayerCheck(store.num_slots(name), err_w, err_b, ok)
            if not ok:
                report.problems.append(f"layer {name}: relative error {max(err_w, err_b or 0.0):.3g} exceeds the "
                                       f"tolerance {report.tolerance:g}")
    except StoreError as exc:                    # CorruptShardError included: named file, reason and fix
        report.problems.append(str(exc))
    return report
