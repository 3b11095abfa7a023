"""Read the depth attention out of any model: ``depth_attention(model, x)``.

Walks ``model.named_modules()`` for depth-mixing containers that record attention (the mixers
whose :class:`~qimia.models.mixers.MixerSpec` has ``records_attention``: QIMIA and DenseFormer's
:class:`~qimia.layers.DepthWeightedAverage`), forces ``return_attention=True`` on
them with forward pre-hooks, runs one forward pass under ``no_grad`` and averages each recorded
``(R, *G, S)`` map over its group axes ``G`` (batch, positions, heads) into ``(R, S)``: row ``r``
is how much reader ``r`` (block ``r+1``, the last row the readout) attends to slot ``s``. The
pass runs in eval mode (restored afterwards), so inspecting never changes BatchNorm statistics.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor, nn

from qimia.models.mixers import container_classes


def depth_attention(model: nn.Module, *inputs: Tensor) -> dict[str, Tensor]:
    """``{container name: (R, S) attention}`` for one forward pass of ``model(*inputs)``.

    Residual models have no such container and return ``{}``. A container called several times
    in one pass (weight sharing across calls) gets the mean over its calls.
    """
    recording = container_classes(records_attention=True)  # the mixers whose spec says they record attention
    containers = {name: m for name, m in model.named_modules() if isinstance(m, recording)}
    if not containers:
        return {}
    recorded: dict[str, list[Tensor]] = defaultdict(list)

    def force_attention(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "return_attention": True}

    def make_recorder(name: str):
        def record(module: nn.Module, args: tuple, output) -> None:
            attention = output.attention  # (R, *G, S)
            if attention.dim() > 2:
                attention = attention.flatten(1, -2).mean(1)  # (R, S)
            recorded[name].append(attention.float().cpu())

        return record

    handles = []
    for name, module in containers.items():
        handles.append(module.register_forward_pre_hook(force_attention, with_kwargs=True))
        # prepend: record before any other hook of the module runs (or stops the pass)
        handles.append(module.register_forward_hook(make_recorder(name), prepend=True))
    was_training = model.training
    model.eval()  # inspection must not move BatchNorm statistics or draw dropout masks
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: torch.stack(maps).mean(0) for name, maps in recorded.items()}
