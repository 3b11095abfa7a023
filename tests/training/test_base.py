from __future__ import annotations

from torch import nn

from qimia.layers import QIMIA, DepthWeightedAverage
from qimia.training.base import parameter_groups


def _ids(group):
    return {id(p) for p in group["params"]}


def test_parameter_groups_keep_mixer_weights_norms_and_biases_out_of_weight_decay():
    blocks = [nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)) for _ in range(2)]
    qimia = QIMIA(blocks, 8, heads=2)
    decay, no_decay = parameter_groups(qimia)
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert id(qimia.queries) in _ids(no_decay)
    assert id(blocks[0][1].weight) in _ids(decay) and id(blocks[0][1].bias) in _ids(no_decay)
    assert id(blocks[0][0].weight) in _ids(no_decay)
    assert all(id(p.weight) in _ids(decay) for p in qimia.key_projections)
    dwa = DepthWeightedAverage([nn.Linear(8, 8)])
    assert _ids(parameter_groups(dwa)[1]) >= {id(a) for a in dwa.alphas}


def test_parameter_groups_leave_frozen_parameters_out():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    groups = parameter_groups(net)
    assert sum(len(g["params"]) for g in groups) == 2
