"""Record the dual-form memory of every ``nn.Linear``, convolution and LSTM while a model trains normally.

Irie, Csordás, Schmidhuber (2022), "The Dual Form of Neural Networks Revisited". For each
recorded layer ``y = W x + b`` (:mod:`qimia.dual.layers`: Linear, Conv1d/2d/3d, the two products
of every ``nn.LSTM`` layer, and Embedding on request) and each optimizer step ``t`` the recorder keeps, per example and per use of the
layer (recurrent cells and shared modules are used several times per forward pass), the key
``x_t`` (the layer input row, a convolution's input patch, an embedding's token id) and the
value ``e_t = dL/dy_t`` exactly as autograd computes it during the real backward pass, so
loss-reduction factors (``1/B`` of a mean) are included automatically. Per step it stores the
optimizer scalars (learning rate from any scheduler, momentum, dampening, Nesterov, weight
decay) and, per parameter, the factor by which ``.grad`` was rescaled between backward and
``step()`` (gradient clipping). :mod:`qimia.dual.grad_checks` verifies on every step that the
slots sum to autograd's gradient, that ``.grad`` is a scalar multiple of it and that the
weights changed only in ``step()``; anything else raises :class:`DualFormError`, never a
silently wrong memory. Trainable layers that are not recorded are listed in an
:class:`UnrecordedLayerWarning`. ``optimizer.zero_grad``/``model.zero_grad`` are wrapped: they
also drop the slots of backward passes whose ``step()`` never came (skipped non-finite or
GradScaler steps, gradient probes).

Usage (plain loop)::

    rec = DualRecorder(model, opt, "runs/mnist-dual")
    for step in range(rec.step, steps):          # rec.step > 0 after resume=True
        xb, yb, idx = batch(step)
        rec.set_batch(idx, labels=yb)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)   # optional
        opt.step(); sched.step()
    rec.close()
"""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from qimia.dual import layers as L
from qimia.dual.errors import DualFormError, StoreError, UnrecordedLayerWarning
from qimia.dual.grad_checks import GradientChecks
from qimia.dual.optim_coeffs import check_optimizer, group_scalars
from qimia.dual.store import META_COLUMNS, DualStore

_STORE_TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16}
_LOW_PRECISION = (torch.float16, torch.bfloat16)

@dataclass
class _Use:
    """One call of a recorded layer: rows of keys, their values (after backward), and metadata."""

    keys: torch.Tensor                  # (n, d_key), or (n, 1) token ids for an embedding
    meta: torch.Tensor                  # (n, 6) int64
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # set_batch() metadata at forward time
    values: torch.Tensor | None = None  # (n, d_value), set by the tensor hook


@dataclass
class _Pending:
    """Steps recorded since the last commit."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    slots: dict[str, list[tuple[np.ndarray | None, ...]]] = field(default_factory=dict)  # keys, values, meta[, vnorm]


def _snapshot(obj: Any) -> Any:
    """Deep copy of a (nested) state dict with every tensor cloned."""
    if torch.is_tensor(obj):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The low-precision dtype an enabled ``torch.autocast`` casts matmuls on ``x``'s device to, else None."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) in _LOW_PRECISION:
        return torch.get_autocast_dtype(device)
    return None


class DualRecorder:
    """Hooks that fill a :class:`~qimia.dual.store.DualStore` during ordinary training.

    Args:
        model: the model being trained (any ``nn.Module``).
        optimizer: ``torch.optim.SGD`` for the exact form; other optimizers need ``keys_only``.
        path: store directory.
        layers: module names to record (default: every trainable ``nn.Linear``, ``nn.Conv1d/2d/3d`` and
            ``nn.LSTM``, the latter as two views per layer; name an ``nn.Embedding`` here to record it
            too). Layers without an exact form (``nn.GRU``, ``nn.RNN``, ``nn.MultiheadAttention``,
            grouped convolutions, bidirectional LSTMs) are refused by name.
        dtype: ``"float64"`` (for fp64 training), ``"float32"`` or ``"float16"`` storage of keys and values.
        keys_only: record inputs only (APPROXIMATE analysis, any optimizer, no reconstruction).
        flush_every: commit a shard group (and a resume checkpoint) every this many steps.
        resume: continue a killed recording: loads model/optimizer/state_objects from the last commit.
        overwrite: replace an existing store at ``path``.
        state_objects: extra objects with ``state_dict``/``load_state_dict`` saved for resume
            (e.g. ``{"scheduler": sched}``).
        check_gradients: verify on every step that the recorded slots reproduce autograd's whole
            gradient ``sum_i e_i x_i^T`` (one matmul per layer; a 256-coordinate probe of it runs on
            every step regardless).
        exact_check_steps: the first steps that get that whole-gradient check (default 4: catches a
            weight also used outside its module from the start).
        info: JSON-serialisable metadata stored in the manifest.
        async_writes: commit shards on a background thread (overlaps disk I/O with training).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, path: str, *,
                 layers: list[str] | None = None, dtype: str = "float32", keys_only: bool = False,
                 flush_every: int = 64, resume: bool = False, overwrite: bool = False,
                 state_objects: Mapping[str, Any] | None = None, check_gradients: bool = False,
                 exact_check_steps: int = 4, info: Mapping[str, Any] | None = None,
                 async_writes: bool = True) -> None:
        check_optimizer(optimizer, keys_only)
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}.")
        self.model, self.optimizer = model, optimizer
        self.keys_only, self.flush_every = keys_only, flush_every
        self.state_objects = dict(state_objects or {})
        params = dict(model.named_parameters())
        self.specs = L.layer_specs(self._select_layers(model, layers), {id(p): n for n, p in params.items()})
        self._spec = {spec.name: spec for spec in self.specs}
        self._params: dict[str, nn.Parameter] = {}      # recorded and trained
        frozen: dict[str, nn.Parameter] = {}            # recorded, never trained (a frozen bias stays b_0)
        for spec in self.specs:
            self._params[spec.weight] = params[spec.weight]
            if spec.bias is not None:
                (self._params if params[spec.bias].requires_grad else frozen)[spec.bias] = params[spec.bias]
        if not keys_only:
            for pname, p in {**self._params, **frozen}.items():
                if p.dtype not in (torch.float32, torch.float64):
                    raise DualFormError(f"parameter {pname} is {p.dtype}: every low-precision update and weight "
                                        "gradient is rounded, so W_T is not W_0 plus the recorded sum of e_t x_t^T. "
                                        "Train in float32 or float64, or record with keys_only=True.")
        self._group_of = self._param_groups(optimizer)
        self._checks = GradientChecks(self._params, frozen, exact_check_steps, check_gradients)

        if resume:
            self.store = DualStore.open(path, resume=True)
            self._check_resume_compatible()
            state = self.store.load_checkpoint()
            if state.get("step") != self.store.num_steps:
                raise StoreError(f"checkpoint is for step {state.get('step')} but the manifest has "
                                 f"{self.store.num_steps} steps; the store is inconsistent.")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            for key, obj in self.state_objects.items():
                obj.load_state_dict(state[key])
        else:
            self.store = DualStore.create(path, self.specs, dtype=dtype, keys_only=keys_only,
                                          w0={**self._params, **frozen}, info=info, overwrite=overwrite)
        self.step = self.store.num_steps
        self._store_dtype = _STORE_TORCH_DTYPES[self.store.manifest["dtype"]]
        self._batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._batch_version = 0
        self._meta_cache_key: tuple | None = None
        self._meta_cache = torch.empty(0)
        self._uses: dict[str, list[_Use]] = {s.name: [] for s in self.specs}
        self._pending = _Pending()
        self._paused = False
        self._stopped: str | None = None      # why the recording stopped (a DualFormError in a step)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dual-store") if async_writes else None
        self._inflight: Future | None = None
        self._handles: list[Any] = []
        self._zero_grad_patches: list[tuple[Any, bool, Any]] = []   # (owner, had instance attr, old attr)
        if not keys_only:
            self._checks.snapshot_weights()                         # W_0 (or the resumed weights)
        self._attach()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _select_layers(model: nn.Module, layers: list[str] | None) -> list[tuple[str, nn.Module]]:
        chosen, left = L.select_layers(model, layers)
        if not chosen:
            raise ValueError("the model has no trainable nn.Linear, nn.Conv1d/2d/3d, nn.Embedding or nn.LSTM layer "
                             "to record.")
        L.check_untied(model, chosen)
        if left and layers is None:
            warnings.warn(UnrecordedLayerWarning(
                "these trainable modules are not recorded, so the dual form covers only the other layers: "
                + "; ".join(left)), stacklevel=3)
        return chosen

    def _param_groups(self, optimizer: torch.optim.Optimizer) -> dict[str, int]:
        index = {id(p): gi for gi, g in enumerate(optimizer.param_groups) for p in g["params"]}
        missing = [n for n, p in self._params.items() if id(p) not in index]
        if missing:
            raise DualFormError(f"parameters {missing} are trained by no optimizer param group; add them to "
                                "the optimizer or pass layers=[...] without their modules.")
        return {n: index[id(p)] for n, p in self._params.items()}

    def _check_resume_compatible(self) -> None:
        stored = [(s.name, s.kind, s.d_key, s.d_value)
                  for s in sorted(self.store.layers.values(), key=lambda s: s.index)]
        here = [(s.name, s.kind, s.d_key, s.d_value) for s in self.specs]
        if stored != here or self.store.keys_only != self.keys_only:
            raise StoreError(f"cannot resume: the store records {stored} (keys_only={self.store.keys_only}), "
                             f"this model/recorder has {here} (keys_only={self.keys_only}).")

    def _attach(self) -> None:
        self._handles.append(L.watch(self.model, [s.name for s in self.specs], self._on_use,
                                     active=lambda: not self._paused and torch.is_grad_enabled()))
        if not self.keys_only:
            for pname, p in self._params.items():
                self._handles.append(p.register_post_accumulate_grad_hook(self._grad_hook(pname)))
        self._handles.append(self.optimizer.register_step_pre_hook(self._pre_step))
        self._handles.append(self.optimizer.register_step_post_hook(self._post_step))
        for owner in (self.optimizer, self.model):
            self._wrap_zero_grad(owner)

    def _wrap_zero_grad(self, owner: Any) -> None:
        """Make ``owner.zero_grad`` also drop what the gradients it clears were made of.

        A backward pass whose ``step()`` never comes (a skipped non-finite step, a GradScaler skip,
        a gradient probe) leaves slots behind; once the user clears ``.grad`` they no longer belong
        to any update and must not be recorded under the next step's coefficients.
        """
        had = "zero_grad" in vars(owner)
        old = vars(owner).get("zero_grad")
        inner = owner.zero_grad

        def zero_grad(*args: Any, **kwargs: Any) -> Any:
            self._discard_backward_state()
            return inner(*args, **kwargs)

        owner.zero_grad = zero_grad
        self._zero_grad_patches.append((owner, had, old))

    def _unwrap_zero_grad(self) -> None:
        for owner, had, old in reversed(self._zero_grad_patches):
            if had:
                owner.zero_grad = old
            else:
                del owner.zero_grad
        self._zero_grad_patches.clear()

    def _discard_backward_state(self) -> None:
        """Forget uses whose backward already ran, and the gradient statistics of that backward.

        Uses still waiting for their backward (the usual ``forward; zero_grad(); backward`` order)
        are kept and renumbered so that their ``use`` column counts the uses that are recorded.
        """
        for name, uses in self._uses.items():
            kept = [u for u in uses if u.values is None]
            if len(kept) < len(uses):
                for i, u in enumerate(kept):
                    u.meta = self._build_meta(u.meta.shape[0], i, u.batch)
            self._uses[name] = kept
        self._meta_cache_key = None
        self._checks.clear()

    # ------------------------------------------------------------------ batch metadata
    def set_batch(self, example_ids: torch.Tensor | np.ndarray | list[int], labels: Any = None,
                  task: int | torch.Tensor = 0) -> None:
        """Metadata of the next forward pass(es) of this step.

        Args:
            example_ids: ``(B,)`` dataset indices of the batch (batch-first inputs).
            labels: ``(B,)`` or ``(B, P)`` labels (P = rows per example, e.g. per-token targets; for a
                cell called once per time step, use ``u`` gets column ``u``); -1 if None.
            task: task / dataset id of the whole batch, or ``(B,)`` one per example.
        """
        ids = torch.as_tensor(example_ids, dtype=torch.int64).reshape(-1)           # (B,)
        lab = (torch.full_like(ids, -1) if labels is None
               else torch.as_tensor(labels).detach().to("cpu", torch.int64).reshape(ids.numel(), -1))  # (B, P)
        tasks = torch.as_tensor(task, dtype=torch.int64).cpu().reshape(-1).expand(ids.numel())  # (B,)
        self._batch = (ids.cpu(), lab, tasks)
        self._batch_version += 1

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Forward passes inside this block are not recorded (e.g. evaluation with gradients on)."""
        self._paused, old = True, self._paused
        try:
            yield
        finally:
            self._paused = old

    # ------------------------------------------------------------------ hooks
    def _meta_for(self, n_rows: int, use: int) -> torch.Tensor:
        """``(n_rows, 6)`` metadata for a batch-first input flattened to ``n_rows`` rows (cached per step)."""
        key = (self.step, n_rows, use, self._batch_version)
        if self._meta_cache_key != key:
            self._meta_cache_key, self._meta_cache = key, self._build_meta(n_rows, use, self._batch)
        return self._meta_cache

    def _build_meta(self, n_rows: int, use: int,
                    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        meta = torch.empty(n_rows, len(META_COLUMNS), dtype=torch.int64)
        meta[:, 0] = self.step
        meta[:, 4] = use
        if batch is None:
            meta[:, 1], meta[:, 2], meta[:, 3], meta[:, 5] = -1, -1, 0, torch.arange(n_rows)
            return meta
        ids, labels, tasks = batch
        B = ids.numel()
        if n_rows % B:
            raise DualFormError(f"a recorded layer saw {n_rows} rows for a batch of {B} examples; inputs must "
                                "be batch-first (B, ..., d) so that every row belongs to one example.")
        per = n_rows // B
        meta[:, 1] = ids.repeat_interleave(per)
        meta[:, 3] = tasks.repeat_interleave(per)
        meta[:, 5] = torch.arange(per).repeat(B)
        if labels.shape[1] == per:
            meta[:, 2] = labels.reshape(-1)
        elif labels.shape[1] == 1:
            meta[:, 2] = labels[:, 0].repeat_interleave(per)
        elif per == 1:      # a cell called once per time step with per-token labels: use u gets column u
            meta[:, 2] = labels[:, use] if use < labels.shape[1] else -1
        else:
            raise DualFormError(f"labels have {labels.shape[1]} entries per example but the layer sees {per} rows "
                                "per example; give one label per example or one per row.")
        return meta

    def _on_use(self, name: str, module: nn.Module | None, x: torch.Tensor, output: torch.Tensor) -> None:
        """One call of a recorded layer (:func:`qimia.dual.layers.watch`): keep its keys, and its values
        once backward reaches ``output``.

        Not gated on module.training: a model trained in eval mode (no dropout, frozen batch norm) is
        still updated by step(); evaluation passes belong in no_grad() or paused().
        """
        if self._paused or not torch.is_grad_enabled():
            return
        spec = self._spec[name]
        low = _autocast_dtype(x) if spec.kind != "embedding" and not self.keys_only else None
        if low is not None:
            raise DualFormError(f"layer {spec.name} ran under torch.autocast({low}): the matmul rounds its input, "
                                f"weight and weight gradient to {low}, so the update is not the recorded sum of "
                                "e_t x_t^T (the reconstruction would be off by about 1e-3). Train in float32 "
                                "(Lightning: precision='32-true') or float64, or record with keys_only=True "
                                "(approximate analysis).")
        keys = L.key_rows(spec, module, x)                                      # (n, d_key) or (n, 1) ids
        use = _Use(keys=keys, meta=self._meta_for(keys.shape[0], len(self._uses[spec.name])),
                   batch=self._batch)
        self._uses[spec.name].append(use)
        if not self.keys_only and output.requires_grad:
            def grad_hook(grad: torch.Tensor, use: _Use = use) -> None:
                use.values = L.value_rows(spec, module, grad, use.keys)               # (n, d_value)
            output.register_hook(grad_hook)

    def _grad_hook(self, pname: str):
        def hook(p: torch.Tensor) -> None:
            self._checks.on_backward(pname, p.grad, self.step)
        return hook

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # Commit before the step rather than after the previous one, so that the checkpoint also
        # holds the scheduler state as it is at the start of this step (schedulers step after
        # opt.step()). Nothing of this step is read here: with ``opt.step(closure)`` (Lightning)
        # forward and backward only run inside step().
        if self._stopped is not None:
            raise DualFormError(f"the recording stopped at step {self.step} ({self._stopped}); the store holds the "
                                "steps committed before it. Fix the cause and record again.")
        if not self.keys_only:
            with self._stop_on_error():
                self._checks.check_weights()      # nothing but the last step() changed the weights
        if len(self._pending.steps) >= self.flush_every:
            self.flush()

    @contextlib.contextmanager
    def _stop_on_error(self) -> Iterator[None]:
        """A :class:`DualFormError` here ends the recording: later steps and :meth:`close` commit nothing more."""
        try:
            yield
        except DualFormError as exc:
            self._stopped = str(exc)
            raise

    def _record_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Collect this step's slots and scalars (called after step(): SGD leaves ``.grad`` untouched)."""
        params: dict[str, list[float] | None] = {}
        for pname, p in self._params.items():
            if p.grad is None:
                params[pname] = None
            else:
                scale = 1.0 if self.keys_only else self._checks.clip_factor(pname, p)
                params[pname] = [self._group_of[pname], scale]
        record = {"step": self.step, "groups": group_scalars(optimizer), "params": params}
        for spec in self.specs:
            uses = [u for u in self._uses[spec.name] if self.keys_only or u.values is not None]
            if not uses:
                if self._checks.seen(spec.weight) and bool(self._params[spec.weight].grad.any()):
                    raise DualFormError(f"layer {spec.name}: its weight got a gradient from backward() in step "
                                        f"{self.step} but none of its forward passes was recorded (was the "
                                        "forward run inside rec.paused(), or the recorder created after it?); "
                                        "the update cannot be written in dual form.")
                continue
            keys = torch.cat([u.keys for u in uses])                                    # (n, d_key)
            meta = torch.cat([u.meta for u in uses])                                    # (n, 6)
            values = None if self.keys_only else torch.cat([u.values for u in uses])   # (n, d_value)
            if values is not None:
                self._checks.check_slots(spec, keys, values)
            stored_keys = (keys.to("cpu", self._store_dtype) if keys.is_floating_point() else keys.cpu()).numpy()
            if values is None:
                entry = (stored_keys, None, meta.numpy())
            else:                                  # ||e_t|| from the unrounded values, before any fp16 cast
                vnorm = torch.linalg.vector_norm(values, dim=1).float()                   # (n,)
                entry = (stored_keys, values.to("cpu", self._store_dtype).numpy(), meta.numpy(), vnorm.cpu().numpy())
            self._pending.slots.setdefault(spec.name, []).append(entry)
        self._pending.steps.append(record)

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with self._stop_on_error():
            self._record_step(optimizer)
        self.step += 1
        self._uses = {s.name: [] for s in self.specs}
        self._meta_cache_key = None
        self._checks.clear()
        if not self.keys_only:
            self._checks.snapshot_weights()

    # ------------------------------------------------------------------ commit
    def flush(self, wait: bool = False) -> None:
        """Commit pending steps as one shard per layer, plus a resume checkpoint.

        With ``async_writes`` the commit (concatenation, norms, writes, fsync, CRC, manifest) runs on
        one background thread while training continues; commits stay in order, at most one is in
        flight, and an error in it is raised here or in :meth:`close`. ``wait=True`` blocks until
        everything is on disk.
        """
        if self._pending.steps:
            pending, self._pending = self._pending, _Pending()
            state = {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
            state.update({k: obj.state_dict() for k, obj in self.state_objects.items()})
            if self._writer is None:
                self._commit(pending, state)
            else:
                state = _snapshot(state)          # the live tensors keep changing while the thread saves
                self._wait_for_writer()
                self._inflight = self._writer.submit(self._commit, pending, state)
        if wait:
            self._wait_for_writer()

    def _commit(self, pending: _Pending, state: dict[str, Any]) -> None:
        slots = {}
        for name, parts in pending.slots.items():
            cat = lambda i: np.concatenate([p[i] for p in parts])  # noqa: E731
            slots[name] = ((cat(0), None, cat(2)) if self.keys_only                      # keys (n, d_key), meta (n, 6)
                           else (cat(0), cat(1), cat(2), cat(3)))                         # + values, ||e_t||
        self.store.append(pending.steps, slots, checkpoint=state)

    def _wait_for_writer(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()                     # re-raises a failed commit

    def close(self) -> DualStore:
        """Check the weights were not edited since the last step, flush, wait for the disk, detach all hooks.

        Returns the store. A weight edited after the last ``step()`` raises :class:`DualFormError`;
        then, and after a step that raised one, the store stays at its last commit (consistent).
        """
        try:
            if self._stopped is None and self._handles:
                if not self.keys_only:
                    with self._stop_on_error():
                        self._checks.check_weights()
                self.flush(wait=True)
            else:
                self._wait_for_writer()
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self._unwrap_zero_grad()
            if self._writer is not None:
                self._writer.shutdown(wait=True)
        return self.store

    def __enter__(self) -> "DualRecorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
