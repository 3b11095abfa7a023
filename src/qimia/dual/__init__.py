"""``qimia.dual``: the dual form of gradient descent, made real for any PyTorch model.

Source: Kazuki Irie, Róbert Csordás, Jürgen Schmidhuber (2022), "The Dual Form of Neural Networks
Revisited: Connecting Test Time Predictions to Training Patterns via Spotlights of Attention",
ICML 2022 (arXiv:2202.05798; official code: github.com/RobertCsordas/linear_layer_as_attention).
A linear layer
(nn.Linear, a convolution on its input patches, an embedding on one-hot tokens) trained by SGD
satisfies ``W_T x = a_0 W_0 x + sum_t c_t e_t (x_t . x)``: unnormalised key-value attention over
every training input ``x_t`` (key) and its output gradient ``e_t = dL/dy_t`` (value), with exact
scalar coefficients ``c_t`` from the optimizer.

Modules (one job each):
    recorder      DualRecorder: hooks every nn.Linear and convolution during ordinary training
    layers        which layers have an exact dual form (keys, values, W vs parameter); refusals by name
    grad_checks   per-step checks: slots sum to autograd's gradient, clipping is a scalar,
                  weights change only in step()
    lightning     DualRecorderCallback (Lightning imported lazily)
    store         DualStore: append-only memory-mapped shards + sha256-sealed manifest + CRC32 + resume
    verify        verify_store: every checksum and the reconstruction error of every layer
    optim_coeffs  exact SGD coefficients (momentum, dampening, Nesterov, weight decay, clipping, schedules)
    reconstruct   W_T from W_0 + memory, masked models, the dual forward
    explain       streamed attention: top-k, per-class / per-group totals, masks, example scores
    table1        the paper's Table 1 procedure; plots: the paper's figures
    experiments   mnist, multitask (joint / continual), lstm_lm
"""

from __future__ import annotations

from qimia.dual.errors import (
    CorruptShardError,
    DualFormError,
    StoreError,
    UnrecordedLayerWarning,
    UnsupportedOptimizerError,
    VerificationError,
)
from qimia.dual.explain import DualExplainer, Explanation, example_scores, layer_inputs, layer_inputs_and_errors
from qimia.dual.optim_coeffs import param_coefficients
from qimia.dual.reconstruct import dual_forward, layer_coefficients, reconstruct_layer, reconstruct_model
from qimia.dual.recorder import DualRecorder
from qimia.dual.store import META_COLUMNS, DualStore, LayerSpec
from qimia.dual.table1 import table1
from qimia.dual.verify import VerifyReport, verify_store

__all__ = [
    "CorruptShardError", "DualExplainer", "DualFormError", "DualRecorder", "DualStore", "Explanation", "LayerSpec",
    "META_COLUMNS", "StoreError", "UnrecordedLayerWarning", "UnsupportedOptimizerError", "VerificationError",
    "VerifyReport", "dual_forward", "example_scores", "layer_coefficients", "layer_inputs", "layer_inputs_and_errors",
    "param_coefficients", "reconstruct_layer", "reconstruct_model", "table1", "verify_store",
]
