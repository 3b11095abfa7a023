"""Lightning callback that records the dual-form memory during ``Trainer.fit``.

Lightning is imported lazily: ``DualRecorderCallback`` is built on first attribute access
(PEP 562), so importing :mod:`qimia.dual` never imports Lightning. The recorder hooks the
torch optimizer itself, so automatic optimization (``optimizer.step(closure)``), gradient
clipping by norm (``Trainer(gradient_clip_val=..., gradient_clip_algorithm="norm")``) and
LR schedulers are all exact. Mixed precision (``precision="bf16-mixed"`` / ``"16-mixed"``) runs the
layers under ``torch.autocast`` and is refused at the first forward pass with a ``DualFormError``:
use ``precision="32-true"`` (or ``"64-true"`` with ``dtype="float64"``).

Example::

    from qimia.dual.lightning import DualRecorderCallback
    cb = DualRecorderCallback("runs/dual", batch_meta=lambda batch, i: (batch[2], batch[1], 0))
    Trainer(callbacks=[cb], max_steps=3000).fit(module, loader)
    store = cb.store
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from qimia.dual.errors import DualFormError
from qimia.dual.recorder import DualRecorder

# (batch, batch_idx) -> (example ids (B,), labels (B,) or None, task id)
BatchMeta = Callable[[Any, int], tuple[Any, Any, int]]
_ALLOWED = {"layers", "dtype", "keys_only", "flush_every", "overwrite", "check_gradients", "exact_check_steps", "info"}


@functools.cache
def _build() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError as exc:  # pragma: no cover - lightning is a dependency of qimia
        raise ImportError("DualRecorderCallback needs the 'lightning' package: pip install lightning") from exc

    class DualRecorderCallback(Callback):
        """Records the LightningModule's layers into a :class:`~qimia.dual.store.DualStore`.

        Args:
            path: store directory.
            batch_meta: maps ``(batch, batch_idx)`` to ``(example_ids, labels, task)`` for slot metadata.
            **recorder_kwargs: passed to :class:`~qimia.dual.recorder.DualRecorder` (``layers``, ``dtype``,
                ``keys_only``, ``flush_every``, ``overwrite``, ``check_gradients``, ``exact_check_steps``, ``info``).
        """

        def __init__(self, path: str, batch_meta: BatchMeta, **recorder_kwargs: Any) -> None:
            unknown = set(recorder_kwargs) - _ALLOWED
            if unknown:
                raise TypeError(f"unknown DualRecorderCallback arguments {sorted(unknown)}; "
                                f"allowed: {sorted(_ALLOWED)}.")
            self.path, self.batch_meta, self.recorder_kwargs = path, batch_meta, recorder_kwargs
            self.recorder: DualRecorder | None = None
            self.store = None

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            if len(trainer.optimizers) != 1:
                raise ValueError(f"DualRecorderCallback supports exactly one optimizer, got {len(trainer.optimizers)}.")
            if trainer.gradient_clip_val and trainer.gradient_clip_algorithm not in (None, "norm"):
                raise ValueError("gradient_clip_algorithm='value' has no exact dual form; use 'norm'.")
            self.recorder = DualRecorder(pl_module, trainer.optimizers[0], self.path, **self.recorder_kwargs)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            ids, labels, task = self.batch_meta(batch, batch_idx)
            self.recorder.set_batch(ids, labels=labels, task=task)

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            if self.recorder is not None:
                self.store = self.recorder.close()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            """Detach the recorder when training fails; Lightning re-raises ``exception`` afterwards.

            The store keeps the steps committed before the failure (a second ``DualFormError`` from
            closing is not allowed to hide the first).
            """
            if self.recorder is not None:
                with contextlib.suppress(DualFormError):
                    self.store = self.recorder.close()

    return DualRecorderCallback


def __getattr__(name: str) -> Any:
    if name == "DualRecorderCallback":
        return _build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
