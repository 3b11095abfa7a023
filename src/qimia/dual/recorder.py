"""Record the dual-form memory of every ``nn.Linear`` while a model trains normally.

For each recorded layer ``y = W x + b`` and each optimizer step ``t`` the recorder keeps,
per example and per use of the layer (recurrent cells and shared modules are used several
times per forward pass), the key ``x_t`` (the layer input) and the value ``e_t = dL/dy_t``
exactly as autograd computes it during the real backward pass, so loss-reduction factors
(``1/B`` of a mean) are included automatically. Per step it stores the optimizer scalars
(learning rate from any scheduler, momentum, dampening, Nesterov, weight decay) and, per
parameter, the factor by which ``.grad`` was rescaled between backward and ``step()``
(gradient clipping), detected by comparing ``.grad`` with the gradient autograd produced.
``optimizer.zero_grad``/``model.zero_grad`` are wrapped: they also drop the slots of backward
passes whose ``step()`` never came (skipped non-finite or GradScaler steps, gradient probes).

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
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from qimia.dual.errors import DualFormError, StoreError
from qimia.dual.optim_coeffs import check_optimizer, group_scalars
from qimia.dual.store import META_COLUMNS, DualStore, LayerSpec

_PROBE = 4096  # coordinates per parameter probed by the clipping detector



@dataclass
class _Use:
    """One call of a recorded layer: rows of keys, their values (after backward), and metadata."""

    keys: torch.Tensor                  # (n, d_key)
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


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """All trainable ``nn.Linear`` submodules in registration order (index 0 = input layer)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]


class DualRecorder:
    """Hooks that fill a :class:`~qimia.dual.store.DualStore` during ordinary training.

    Args:
        model: the model being trained (any ``nn.Module``).
        optimizer: ``torch.optim.SGD`` for the exact form; other optimizers need ``keys_only``.
        path: store directory.
        layers: module names to record (default: every trainable ``nn.Linear``).
        dtype: ``"float32"`` or ``"float16"`` storage of keys and values.
        keys_only: record inputs only (APPROXIMATE analysis, any optimizer, no reconstruction).
        flush_every: commit a shard group (and a resume checkpoint) every this many steps.
        resume: continue a killed recording: loads model/optimizer/state_objects from the last commit.
        overwrite: replace an existing store at ``path``.
        state_objects: extra objects with ``state_dict``/``load_state_dict`` saved for resume
            (e.g. ``{"scheduler": sched}``).
        check_gradients: verify every step that the recorded slots reproduce autograd's weight
            gradient ``sum_i e_i x_i^T`` (costs one matmul per layer; for debugging).
        info: JSON-serialisable metadata stored in the manifest.
        async_writes: commit shards on a background thread (overlaps disk I/O with training).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, path: str, *,
                 layers: list[str] | None = None, dtype: str = "float32", keys_only: bool = False,
                 flush_every: int = 64, resume: bool = False, overwrite: bool = False,
                 state_objects: Mapping[str, Any] | None = None, check_gradients: bool = False,
                 info: Mapping[str, Any] | None = None, async_writes: bool = True) -> None:
        check_optimizer(optimizer, keys_only)
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}.")
        self.model, self.optimizer = model, optimizer
        self.keys_only, self.flush_every, self.check_gradients = keys_only, flush_every, check_gradients
        self.state_objects = dict(state_objects or {})
        self._modules = self._select_layers(model, layers)
        param_names = {id(p): n for n, p in model.named_parameters()}
        self.specs: list[LayerSpec] = []
        for i, (name, mod) in enumerate(self._modules):
            self.specs.append(LayerSpec(name=name, index=i, d_key=mod.in_features, d_value=mod.out_features,
                                        weight=param_names[id(mod.weight)],
                                        bias=param_names[id(mod.bias)] if mod.bias is not None else None))
        self._params: dict[str, nn.Parameter] = {}
        for (_, mod), spec in zip(self._modules, self.specs):
            self._params[spec.weight] = mod.weight
            if spec.bias is not None:
                self._params[spec.bias] = mod.bias
        self._group_of = self._param_groups(optimizer)

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
            w0 = {n: p for n, p in self._params.items()}
            self.store = DualStore.create(path, self.specs, dtype=dtype, keys_only=keys_only, w0=w0,
                                          info=info, overwrite=overwrite)
        self.step = self.store.num_steps
        self._store_dtype = torch.float16 if self.store.manifest["dtype"] == "float16" else torch.float32
        self._batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._batch_version = 0
        self._meta_cache_key: tuple | None = None
        self._meta_cache = torch.empty(0)
        self._uses: dict[str, list[_Use]] = {s.name: [] for s in self.specs}
        self._grad_stats: dict[str, torch.Tensor] = {}    # param -> [||g||^2, g . u] of autograd's gradient
        self._probes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # param -> (coordinates, signs u)
        self._raw_grads: dict[str, torch.Tensor] = {}     # only with check_gradients
        self._grad_version: dict[str, tuple[torch.Tensor, int]] = {}
        self._pending = _Pending()
        self._paused = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dual-store") if async_writes else None
        self._inflight: Future | None = None
        self._handles: list[Any] = []
        self._zero_grad_patches: list[tuple[Any, bool, Any]] = []   # (owner, had instance attr, old attr)
        self._attach()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _select_layers(model: nn.Module, layers: list[str] | None) -> list[tuple[str, nn.Linear]]:
        available = dict(linear_layers(model))
        if layers is None:
            chosen = list(available.items())
        else:
            missing = [n for n in layers if n not in available]
            if missing:
                raise ValueError(f"layers {missing} are not trainable nn.Linear modules of the model; "
                                 f"available: {sorted(available)}.")
            chosen = [(n, m) for n, m in available.items() if n in layers]
        if not chosen:
            raise ValueError("the model has no trainable nn.Linear layer to record.")
        seen: dict[int, str] = {}
        for name, mod in chosen:
            if id(mod.weight) in seen:
                raise DualFormError(f"modules {seen[id(mod.weight)]!r} and {name!r} share one weight; call the "
                                    "same module twice instead (every use of a module is recorded).")
            seen[id(mod.weight)] = name
        return chosen

    def _param_groups(self, optimizer: torch.optim.Optimizer) -> dict[str, int]:
        index = {id(p): gi for gi, g in enumerate(optimizer.param_groups) for p in g["params"]}
        missing = [n for n, p in self._params.items() if id(p) not in index]
        if missing:
            raise DualFormError(f"parameters {missing} are trained by no optimizer param group; add them to "
                                "the optimizer or pass layers=[...] without their modules.")
        return {n: index[id(p)] for n, p in self._params.items()}

    def _check_resume_compatible(self) -> None:
        stored = [(s.name, s.d_key, s.d_value) for s in sorted(self.store.layers.values(), key=lambda s: s.index)]
        here = [(s.name, s.d_key, s.d_value) for s in self.specs]
        if stored != here or self.store.keys_only != self.keys_only:
            raise StoreError(f"cannot resume: the store records {stored} (keys_only={self.store.keys_only}), "
                             f"this model/recorder has {here} (keys_only={self.keys_only}).")

    def _attach(self) -> None:
        for (name, mod), spec in zip(self._modules, self.specs):
            self._handles.append(mod.register_forward_hook(self._forward_hook(spec)))
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
        self._raw_grads.clear()
        self._grad_stats.clear()
        self._grad_version.clear()

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

    def _forward_hook(self, spec: LayerSpec):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            # Not gated on module.training: a model trained in eval mode (no dropout, frozen batch
            # norm) is still updated by step(); evaluation passes belong in no_grad() or paused().
            if self._paused or not torch.is_grad_enabled():
                return
            keys = args[0].detach().reshape(-1, spec.d_key)                          # (n, d_key)
            use = _Use(keys=keys, meta=self._meta_for(keys.shape[0], len(self._uses[spec.name])),
                       batch=self._batch)
            self._uses[spec.name].append(use)
            if not self.keys_only and output.requires_grad:
                def grad_hook(grad: torch.Tensor, use: _Use = use) -> None:
                    use.values = grad.detach().reshape(-1, spec.d_value)             # (n, d_value)
                output.register_hook(grad_hook)
        return hook

    def _stats(self, pname: str, grad: torch.Tensor) -> torch.Tensor:
        """``[||g||^2, g[idx] . u]``: full squared norm and a projection on a fixed random subset.

        ``idx`` are ``_PROBE`` fixed random coordinates and ``u`` fixed random signs, so the statistics
        cost one pass over the gradient (the projection reads only ``_PROBE`` entries).
        """
        g = grad.detach().reshape(-1)
        if pname not in self._probes:
            gen = torch.Generator().manual_seed(len(self._probes))
            idx = torch.randperm(g.numel(), generator=gen)[:_PROBE].sort().values.to(g.device)
            signs = (torch.randint(0, 2, idx.shape, generator=gen) * 2 - 1).to(g.device, g.dtype)
            self._probes[pname] = (idx, signs)
        idx, signs = self._probes[pname]
        return torch.stack([torch.dot(g, g), torch.dot(g[idx], signs)])

    def _grad_hook(self, pname: str):
        def hook(p: torch.Tensor) -> None:
            self._grad_stats[pname] = self._stats(pname, p.grad)
            self._grad_version[pname] = (p.grad, p.grad._version)   # in-place edits (clipping) bump _version
            if self.check_gradients:
                self._raw_grads[pname] = p.grad.detach().clone()
        return hook

    def _clip_factor(self, pname: str, p: torch.Tensor) -> float:
        """Scalar ``s`` with ``p.grad == s * (autograd gradient)``; errors if no such scalar exists.

        Two statistics of autograd's gradient ``r`` are kept at backward time (no copy of ``r``):
        ``||r||^2`` and ``r[idx] . u`` on fixed random coordinates with random signs. At ``step()`` the
        same two of ``.grad`` give ``s = ||g|| / ||r||`` and ``s' = (g[idx] . u) / (r[idx] . u)``; a
        scalar rescaling (global-norm clipping) makes them equal; value clipping, noise or sign flips
        change the norm or the probed coordinates and make them differ (only a change that keeps the
        norm and avoids every probed coordinate could pass; ``check_gradients=True`` checks fully).
        When ``.grad`` is the tensor backward left with an unchanged version counter, only the
        probe is recomputed (4096 reads): some in-place kernels, such as GradScaler's ``unscale_``,
        do not bump the version counter.
        """
        before = self._grad_stats.get(pname)
        if before is None:
            if not bool(p.grad.any()):    # zero_grad(set_to_none=False) and unused this step: G_t = 0
                return 1.0
            raise DualFormError(f"{pname}.grad was set outside autograd's backward pass; the dual form "
                                "cannot account for it.")
        tensor, version = self._grad_version[pname]
        if p.grad is tensor and p.grad._version == version:
            # Probably not modified since backward, but some in-place kernels do not bump the version
            # counter (GradScaler's unscale_ does not): confirm on the probed coordinates only.
            idx, signs = self._probes[pname]
            probe = torch.dot(p.grad.detach().reshape(-1)[idx], signs)
            if bool(probe != 0) and bool(probe == before[1]):
                return 1.0
        rr, ru = before.tolist()
        gg, gu = self._stats(pname, p.grad).tolist()
        if (gg == rr and gu == ru) or rr == 0.0:         # untouched (the common case) or zero gradient
            return 1.0
        s = (gg / rr) ** 0.5
        s_proj = gu / ru if ru != 0.0 else s
        if abs(s - s_proj) > 1e-3 * max(s, 1e-30):
            raise DualFormError(f"{pname}.grad was changed between backward() and step() by more than a scalar "
                                f"factor (norm ratio {s:.4g} vs projection ratio {s_proj:.4g}); only global-norm "
                                "scaling such as clip_grad_norm_ has an exact dual form (not clip_grad_value_, "
                                "noise or sign flips).")
        if self.check_gradients:                          # full check against the kept copy
            raw = self._raw_grads[pname].double()
            resid = float((p.grad.double() - s * raw).norm() / raw.norm())
            if resid > 1e-5:
                raise DualFormError(f"{pname}.grad is not a scalar multiple of autograd's gradient "
                                    f"(relative residual {resid:.2e}); the dual form cannot represent it.")
        return s

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # Commit before the step rather than after the previous one, so that the checkpoint also
        # holds the scheduler state as it is at the start of this step (schedulers step after
        # opt.step()). Nothing of this step is read here: with ``opt.step(closure)`` (Lightning)
        # forward and backward only run inside step().
        if len(self._pending.steps) >= self.flush_every:
            self.flush()

    def _record_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Collect this step's slots and scalars (called after step(): SGD leaves ``.grad`` untouched)."""
        params: dict[str, list[float] | None] = {}
        for pname, p in self._params.items():
            if p.grad is None:
                params[pname] = None
            else:
                scale = 1.0 if self.keys_only else self._clip_factor(pname, p)
                params[pname] = [self._group_of[pname], scale]
        record = {"step": self.step, "groups": group_scalars(optimizer), "params": params}
        for spec in self.specs:
            uses = [u for u in self._uses[spec.name] if self.keys_only or u.values is not None]
            if not uses:
                if spec.weight in self._grad_stats and bool(self._params[spec.weight].grad.any()):
                    raise DualFormError(f"layer {spec.name}: its weight got a gradient from backward() in step "
                                        f"{self.step} but none of its forward passes was recorded (was the "
                                        "forward run inside rec.paused(), or the recorder created after it?); "
                                        "the update cannot be written in dual form.")
                continue
            keys = torch.cat([u.keys for u in uses])                                    # (n, d_key)
            meta = torch.cat([u.meta for u in uses])                                    # (n, 6)
            values = None if self.keys_only else torch.cat([u.values for u in uses])   # (n, d_value)
            if self.check_gradients and not self.keys_only:
                self._check_slots(spec, keys, values)
            dt = self._store_dtype
            if values is None:
                entry = (keys.to("cpu", dt).numpy(), None, meta.numpy())
            else:                                  # ||e_t|| from the fp32 values, before any fp16 cast
                vnorm = torch.linalg.vector_norm(values.float(), dim=1)                   # (n,)
                entry = (keys.to("cpu", dt).numpy(), values.to("cpu", dt).numpy(), meta.numpy(), vnorm.cpu().numpy())
            self._pending.slots.setdefault(spec.name, []).append(entry)
        self._pending.steps.append(record)

    def _check_slots(self, spec: LayerSpec, keys: torch.Tensor, values: torch.Tensor) -> None:
        grad = values.double().T @ keys.double()                                        # (d_value, d_key)
        raw = self._raw_grads[spec.weight].double()
        err = float((grad - raw).norm() / raw.norm().clamp_min(1e-30))
        if err > 1e-4:
            raise DualFormError(f"layer {spec.name}: recorded slots give a weight gradient that differs from "
                                f"autograd's by {err:.2e} (relative); is the weight also used outside the module?")

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._record_step(optimizer)
        self.step += 1
        self._uses = {s.name: [] for s in self.specs}
        self._meta_cache_key = None
        self._raw_grads.clear()
        self._grad_stats.clear()
        self._grad_version.clear()

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
        """Flush, wait for the disk, detach all hooks; returns the store."""
        try:
            self.flush(wait=True)
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
