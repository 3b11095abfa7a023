r"""Checks that training did exactly what the dual form assumes, step by step.

Irie, Csordás, Schmidhuber (2022), "The Dual Form of Neural Networks Revisited": the form
``W_T = a_0 W_0 + sum_t c_t e_t x_t^T`` holds only if, at every step,

1. autograd's weight gradient is the sum of the recorded slots, ``G_t = sum_i e_i x_i^T``
   (no functional use ``F.linear(h, layer.weight)``, no use the hooks do not see);
2. ``.grad`` at ``step()`` is a positive scalar multiple ``s_t G_t`` of it (global-norm clipping,
   GradScaler unscaling), folded into ``c_t``;
3. the weights change only through ``optimizer.step()`` (no max-norm constraint or other edit).

:class:`GradientChecks` tests all three cheaply on every step, using a fixed random set of
``PROBE`` coordinates per parameter: at backward time it keeps ``r = G_t[idx]`` and ``||G_t||^2``.

* (1) the slots give ``sum_i e_i[rows] x_i[cols]`` on ``SLOT_PROBE`` of those coordinates
  (``O(n * SLOT_PROBE)`` per layer), compared with ``r`` relative to ``||r||``, or where that
  fails, to ``sum_i |e_i[rows] x_i[cols]|`` (the scale of fp rounding when the terms cancel);
  in the first ``exact_steps`` steps (and every step with ``full=True``) the whole gradient is compared.
* (2) ``s`` is the least-squares ratio of ``.grad[idx]`` to ``r`` (float64); the residual
  ``||g[idx] - s r|| / ||g[idx]||`` must vanish (value clipping, noise and sign flips do not)
  and ``||g|| / ||G_t||`` must equal ``s`` (changes outside the probed coordinates).
  Comparing vectors, not a signed projection, stays exact for any output size (softmax
  cross-entropy makes an output bias gradient sum to about 0).
* (3) after every ``step()`` the probed weight entries and ``||W||^2`` are kept and compared
  (bit for bit) before the next ``step()`` and at ``close()``.
"""

from __future__ import annotations

import torch
from torch import nn

from qimia.dual import layers as L
from qimia.dual.errors import DualFormError
from qimia.dual.store import LayerSpec

PROBE = 4096        # probed coordinates per parameter (clipping detector, weight fingerprint)
SLOT_PROBE = 256    # of these, the ones compared with the slots on every step
_SLOT_TOL = 1e-4    # slot sums vs autograd, relative to ||r|| or to the absolute terms (fp32 rounding ~1e-7)
_SCALE_TOL = 1e-5   # residual of .grad against s * (autograd gradient) on the probe
_NORM_TOL = 1e-4    # ||g|| / ||G|| against s
_FULL_TOL = 1e-4    # full gradient check, relative to ||G||


class GradientChecks:
    """The three per-step checks above.

    Args:
        params: recorded trainable parameters (name -> parameter): all three checks.
        frozen: recorded parameters that are not trained (a frozen bias): check 3 only.
        exact_steps: the first steps that get the full gradient check.
        full: the full gradient check on every step.
    """

    def __init__(self, params: dict[str, nn.Parameter], frozen: dict[str, nn.Parameter], exact_steps: int,
                 full: bool) -> None:
        self.exact_steps, self.full = exact_steps, full
        self._fingerprinted = {**params, **frozen}
        self._idx: dict[str, torch.Tensor] = {}
        for i, (name, p) in enumerate(self._fingerprinted.items()):
            self._idx[name] = _probe_index(p.numel(), seed=i).to(p.device)
        self._grad: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}  # r, ||G||^2, .grad, version
        self._raw: dict[str, torch.Tensor] = {}
        self._weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._coords: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}   # slot-probe (rows, cols)

    def exact(self, step: int) -> bool:
        """Whether step ``step`` gets the full (not only probed) slot check."""
        return self.full or step < self.exact_steps

    # ------------------------------------------------------------------ backward time
    def on_backward(self, name: str, grad: torch.Tensor, step: int) -> None:
        """Keep ``G[idx]`` and ``||G||^2`` of autograd's (accumulated) gradient; a full copy on exact steps."""
        g = grad.detach().reshape(-1)
        self._grad[name] = (g.index_select(0, self._idx[name]), torch.dot(g, g), grad, grad._version)
        if self.exact(step):
            self._raw[name] = grad.detach().clone()

    def seen(self, name: str) -> bool:
        return name in self._grad

    def clear(self) -> None:
        """Forget the gradient statistics (after a step, or when ``zero_grad`` drops a backward pass)."""
        self._grad.clear()
        self._raw.clear()

    # ------------------------------------------------------------------ check 2: .grad = s * G
    def clip_factor(self, name: str, p: torch.Tensor) -> float:
        """The positive scalar ``s`` with ``p.grad == s * G`` (autograd's gradient); errors if there is none."""
        if name not in self._grad:
            if not bool(p.grad.any()):    # zero_grad(set_to_none=False) and unused this step: G_t = 0
                return 1.0
            raise DualFormError(f"{name}.grad was set outside autograd's backward pass; the dual form cannot "
                                "account for it.")
        r, rr_t, tensor, version = self._grad[name]
        g = p.grad.detach().reshape(-1)
        gi = g.index_select(0, self._idx[name])
        if p.grad is tensor and p.grad._version == version and torch.equal(gi, r):
            return 1.0                    # untouched (GradScaler's unscale_ does not bump the version: compared)
        rr, gg = float(rr_t), float(torch.dot(g, g))
        if rr == 0.0:
            if gg == 0.0:
                return 1.0
            raise DualFormError(f"{name}.grad is non-zero but autograd's gradient was zero; it was set outside the "
                                "backward pass and the dual form cannot account for it.")
        r64, g64 = r.double(), gi.double()
        s_norm = (gg / rr) ** 0.5
        s = float(g64 @ r64 / (r64 @ r64)) if bool(r64.any()) else s_norm
        resid = float((g64 - s * r64).norm() / g64.norm()) if bool(g64.any()) else 0.0
        if s < 0 or resid > _SCALE_TOL or abs(s_norm - s) > _NORM_TOL * max(s_norm, 1e-30):
            raise DualFormError(f"{name}.grad was changed between backward() and step() by more than a scalar "
                                f"factor (norm ratio {s_norm:.4g}, probed ratio {s:.4g}, residual {resid:.2e}); only "
                                "global-norm scaling such as clip_grad_norm_ has an exact dual form (not "
                                "clip_grad_value_, noise or sign flips).")
        if name in self._raw:
            raw = self._raw[name].double()
            full = float((p.grad.double() - s * raw).norm() / raw.norm())
            if full > _SCALE_TOL:
                raise DualFormError(f"{name}.grad is not a scalar multiple of autograd's gradient (relative "
                                    f"residual {full:.2e}); the dual form cannot represent it.")
        return s

    # ------------------------------------------------------------------ check 1: G = sum of the slots
    def check_slots(self, spec: LayerSpec, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Autograd's gradients of ``spec``'s weight and bias must be the sums of its recorded slots."""
        for name, is_bias in ((spec.weight, False), (spec.bias, True)):
            if name is None or name not in self._grad:
                continue
            idx = self._idx[name][:SLOT_PROBE]
            if name not in self._coords:
                self._coords[name] = (idx, None) if is_bias else L.dual_coords(spec, idx)
            r = self._grad[name][0][:idx.numel()].double()
            total = self._probed_sum(spec, keys, values, *self._coords[name], absolute=False)
            diff = float((total - r).norm())
            if diff > _SLOT_TOL * float(r.norm()):         # rounding is relative to the terms, not to their sum
                scale = float(self._probed_sum(spec, keys, values, *self._coords[name], absolute=True).norm())
                if diff > _SLOT_TOL * scale:
                    self._mismatch(spec, name, f"{diff / max(scale, 1e-300):.2e} on {idx.numel()} probed coordinates")
            if name in self._raw:
                self._check_full(spec, name, is_bias, keys, values)

    @staticmethod
    def _probed_sum(spec: LayerSpec, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor,
                    cols: torch.Tensor | None, absolute: bool) -> torch.Tensor:
        """``(P,)`` float64 ``sum_i e_i[rows] x_i[cols]`` (``cols=None``: a bias, constant-1 keys), or of ``|...|``."""
        total = torch.zeros(rows.numel(), dtype=torch.float64, device=values.device)
        chunk = max(1, (1 << 22) // max(1, rows.numel()))
        for lo in range(0, values.shape[0], chunk):
            part = values[lo:lo + chunk].index_select(1, rows)                           # (chunk, P)
            if cols is not None:
                part = part * L.key_columns(spec, keys[lo:lo + chunk], cols, part.dtype)
            total += (part.abs() if absolute else part).sum(0, dtype=torch.float64)
        return total

    def _check_full(self, spec: LayerSpec, name: str, is_bias: bool, keys: torch.Tensor, values: torch.Tensor) -> None:
        raw = self._raw[name].double()
        if is_bias:
            grad = values.double().sum(0)                                           # (d_value,)
        else:
            matrix = torch.zeros(spec.d_value, spec.d_key, dtype=torch.float64, device=values.device)
            L.add_outer(spec, matrix, values.double(), keys if spec.kind == "embedding" else keys.double())
            grad = L.to_param(spec, matrix)
        err = float((grad - raw).norm() / raw.norm().clamp_min(1e-30))
        if err > _FULL_TOL:
            self._mismatch(spec, name, f"{err:.2e} (full gradient)")

    @staticmethod
    def _mismatch(spec: LayerSpec, name: str, what: str) -> None:
        raise DualFormError(f"layer {spec.name}: autograd's gradient of {name} is not the sum of the recorded slots "
                            f"e_t x_t^T (relative mismatch {what}): the parameter is also used outside the module "
                            "(e.g. F.linear(h, layer.weight), a weight tied to an unrecorded module) or the module's "
                            "forward computes something else, so the dual form would be wrong. Use the module itself "
                            "for every use (each call is recorded), or leave the layer out with layers=[...].")

    # ------------------------------------------------------------------ check 3: weights change only in step()
    def snapshot_weights(self) -> None:
        """Fingerprint every recorded parameter (probed entries and squared norm) as it is now."""
        self._weights = {}
        for name, p in self._fingerprinted.items():
            w = p.detach().reshape(-1)
            self._weights[name] = (w.index_select(0, self._idx[name]), torch.dot(w, w))

    def check_weights(self) -> None:
        """Raise if any recorded parameter differs from its last :meth:`snapshot_weights` fingerprint."""
        for name, p in self._fingerprinted.items():
            probe, norm = self._weights[name]
            w = p.detach().reshape(-1)
            if not (torch.equal(w.index_select(0, self._idx[name]), probe) and bool(torch.dot(w, w) == norm)):
                raise DualFormError(f"{name} was changed outside optimizer.step() (e.g. a max-norm constraint, "
                                    "renorm_/clamp_ or a manual edit between steps); the dual form W_T = a_0 W_0 + "
                                    "sum_t c_t e_t x_t^T only holds for SGD updates. Express the constraint as part "
                                    "of the loss, or record with keys_only=True (approximate analysis).")


def _probe_index(numel: int, seed: int) -> torch.Tensor:
    """``min(numel, PROBE)`` fixed random flat coordinates (all of them, in random order, for small tensors)."""
    gen = torch.Generator().manual_seed(seed)
    if numel <= PROBE:
        return torch.randperm(numel, generator=gen)
    return torch.randint(0, numel, (PROBE,), generator=gen)
