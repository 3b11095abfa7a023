"""``qimia.dual``: the dual form of gradient descent, made real for any PyTorch model.

A linear layer trained by SGD satisfies ``W_T x = a_0 W_0 x + sum_t c_t e_t (x_t . x)``: unnormalised
key-value attention over every training input ``x_t`` (key) and its output gradient
``e_t = dL/dy_t`` (value), with exact scalar coefficients ``c_t`` from the optimizer.

Modules (one job each):
    recorder      DualRecorder: hooks every nn.Linear during ordinary training
    lightning     DualRecorderCallback (Lightning imported lazily)
    store         DualStore: append-only memory-mapped shards + manifest + CRC32 + resume
    optim_coeffs  exact SGD coefficients (momentum, dampening, Nesterov, weight decay, clipping, schedules)
    reconstruct   W_T from W_0 + memory, masked models, the dual forward
    explain       streamed attention: top-k, per-class / per-group totals, masks, example scores
    table1        the paper's Table 1 procedure; plots: the paper's figures
    experiments   mnist, multitask (joint / continual), lstm_lm
"""

from __future__ import annotations

from qimia.dual.errors import CorruptShardError, DualFormError, StoreError, UnsupportedOptimizerError
from qimia.dual.explain import DualExplainer, Explanation, example_scores, layer_inputs, layer_inputs_and_errors
from qimia.dual.optim_coeffs import param_coefficients
from qimia.dual.reconstruct import dual_forward, layer_coefficients, reconstruct_layer, reconstruct_model
from qimia.dual.recorder import DualRecorder
from qimia.dual.store import META_COLUMNS, DualStore, LayerSpec
from qimia.dual.table1 import table1

__all__ = [
    "CorruptShardError", "DualExplainer", "DualFormError", "DualRecorder", "DualStore", "Explanation", "LayerSpec",
    "META_COLUMNS", "StoreError", "UnsupportedOptimizerError", "dual_forward", "example_scores", "layer_coefficients",
    "layer_inputs", "layer_inputs_and_errors", "param_coefficients", "reconstruct_layer", "reconstruct_model", "table1",
]
