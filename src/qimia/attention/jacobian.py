"""Implicit attention: Jacobian sensitivity of a network's outputs to its inputs.

For a model ``f`` and an input ``x``, the Jacobian ``J[o, i] = d f(x)[o] / d x[i]`` says how much
each input element could change each output: the attention the network pays to its input
without any explicit attention mechanism (Graves's lecture; Simonyan et al., 2014, call the
class-specific row a saliency map). For an RNN mapping ``x_1..x_T`` to ``y_1..y_T`` the
*sequential Jacobian* ``d y_t / d x_{t'}`` shows which past inputs the output at ``t`` uses.

:func:`input_jacobian` uses ``torch.func.vmap(torch.func.jacrev(f))`` (per-sample Jacobians in
one batched call). Two ways this degrades, both made visible:

* an op without a vmap batching rule (``nn.LSTM`` on CPU: ``aten::mkldnn_rnn_layer``) makes torch
  run that op one sample at a time inside vmap: still exact, slower. Logged once per op
  (``logging.WARNING`` on ``qimia.attention.jacobian``).
* a module vmap cannot trace at all (data-dependent Python control flow, ``.item()``; ``nn.RNN``
  in torch 2.14) raises; ``method="auto"`` then warns (``UserWarning``) and falls back to one
  reverse pass per output element (a loop over outputs, never over the batch), which is exact
  when batch elements do not interact (put the model in ``eval()`` mode: batch-norm statistics
  would couple them).
"""

from __future__ import annotations

import logging
import re
import warnings

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)
# torch's BatchedFallback warning: "... we have not yet implemented the batching rule for aten::mkldnn_rnn_layer ..."
_NO_BATCHING_RULE = re.compile(r"batching rule for (\S+?)\.?(?:\s|$)")
_LOGGED_OPS: set[str] = set()


def _jacobian_vmap(model: nn.Module, x: Tensor) -> Tensor:
    def single(xi: Tensor) -> Tensor:
        return model(xi.unsqueeze(0)).squeeze(0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jac = torch.func.vmap(torch.func.jacrev(single))(x)
    for w in caught:
        match = _NO_BATCHING_RULE.search(str(w.message))
        if match is None:  # not ours to judge: hand it on unchanged
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        elif match.group(1) not in _LOGGED_OPS:  # once per op and process, as a log line (not a warning)
            _LOGGED_OPS.add(match.group(1))
            logger.warning(
                "input_jacobian: torch.func.vmap has no batching rule for %s, so torch runs that op one sample "
                "at a time inside vmap (exact, but slower). This happens for nn.LSTM on CPU; method='loop' "
                "(one backward pass per output element) can be faster for long sequences.", match.group(1))
    return jac


def _jacobian_loop(model: nn.Module, x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = model(x)  # (B, *out)
        flat = y.reshape(y.shape[0], -1)  # (B, O)
        rows = [torch.autograd.grad(flat[:, o].sum(), x, retain_graph=True)[0] for o in range(flat.shape[1])]
    return torch.stack(rows, 1).reshape(*y.shape, *x.shape[1:]).detach()  # (B, *out, *in)


def input_jacobian(model: nn.Module, x: Tensor, method: str = "auto") -> Tensor:
    """Per-sample Jacobian of ``model``'s output w.r.t. its input.

    Args:
        model: maps ``(B, *in)`` to ``(B, *out)`` with independent batch elements.
        x: ``(B, *in)``.
        method: ``"vmap"``, ``"loop"`` or ``"auto"`` (vmap, falling back to the loop if vmap fails).

    Returns:
        ``(B, *out, *in)``: ``J[b, o..., i...] = d model(x)[b, o...] / d x[b, i...]``.
    """
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"unknown method {method!r}; choose auto, vmap or loop")
    if method == "loop":
        return _jacobian_loop(model, x)
    try:
        return _jacobian_vmap(model, x)
    except Exception as err:  # noqa: BLE001 - vmap raises many types for unsupported ops
        if method == "vmap":
            raise
        warnings.warn(f"vmap failed ({type(err).__name__}: {str(err)[:120]}); using one backward pass per output",
                      stacklevel=2)
        return _jacobian_loop(model, x)


def sensitivity_map(model: nn.Module, x: Tensor, target: Tensor | None = None, method: str = "auto") -> Tensor:
    """``|d f(x)[c] / d x|`` for class ``c`` (``target``, or the predicted class).

    Args: x ``(B, *in)``; target ``(B,)`` or None. Returns ``(B, *in)``.
    """
    jac = input_jacobian(model, x, method)  # (B, K, *in)
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(-1)
    idx = target.view(-1, 1, *([1] * (x.dim() - 1))).expand(-1, 1, *x.shape[1:])
    return jac.gather(1, idx).squeeze(1).abs()


def sequential_jacobian(model: nn.Module, x: Tensor, method: str = "auto") -> Tensor:
    """Sensitivity of each output step to each input step: ``||d y_t / d x_{t'}||_F``.

    Args:
        model: maps ``(B, T, D)`` to ``(B, T, O)``.
        x: ``(B, T, D)``.

    Returns:
        ``(B, T_out, T_in)`` Frobenius norms over the output and input features.
    """
    jac = input_jacobian(model, x, method)  # (B, T, O, T, D)
    return jac.pow(2).sum(dim=(2, 4)).sqrt()
