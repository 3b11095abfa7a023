"""Differentiable Neural Computer (Graves et al., 2016, Nature; Methods section).

Symbols follow the paper. Memory ``M`` is ``(B, N, W)``; there are ``R`` read heads and
one write head. At each step the controller emits the interface vector, parsed as::

    k^r (R, W), beta^r (R), k^w (W), beta^w, e (W), v (W), f (R), g^a, g^w, pi (R, 3)

and the memory access runs (write first, then read)::

    psi      = prod_i (1 - f_i w^r_{t-1,i})                            # retention
    u_t      = (u_{t-1} + w^w_{t-1} - u_{t-1} o w^w_{t-1}) o psi        # usage
    a_t[phi_j] = (1 - u_t[phi_j]) prod_{i<j} u_t[phi_i]                # allocation (phi: usage sorted up)
    w^w_t    = g^w (g^a a_t + (1 - g^a) c^w_t)                         # write weighting
    M_t      = M_{t-1} o (1 - w^w_t e^T) + w^w_t v^T                   # erase then add
    p_t      = (1 - sum_i w^w_t[i]) p_{t-1} + w^w_t                     # precedence
    L_t[i,j] = (1 - w^w_t[i] - w^w_t[j]) L_{t-1}[i,j] + w^w_t[i] p_{t-1}[j],  L_t[i,i] = 0
    f^i_t    = L_t w^r_{t-1},   b^i_t = L_t^T w^r_{t-1}                # forward / backward
    w^r_t    = pi[0] b + pi[1] c^r + pi[2] f                           # read modes
    r_t      = M_t^T w^r_t

The read-mode order ``[backward, content, forward]`` is the Nature paper's (Graves et al. 2016,
``pi = (b, c, f)``); deepmind/dnc orders its read modes ``[backward, forward, content]``.

Usage is not differentiated with respect to the previous write weights ``w^w_{t-1}``: deepmind/dnc's
``Freeness`` stops that gradient ("Calculation of usage is not differentiable with respect to write
weights"), and so does this module unless ``usage_write_gradient=True`` (the paper's equations
are silent on it). The free gates and read weights keep their gradient either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.addressing import content_weighting
from qimia.memory.controllers import ControllerState, check_sizes, make_controller
from qimia.memory.heads import read_memory, write_memory
from qimia.memory.recurrent import RecurrentMemory
from qimia.memory.registry import register_memory_model

USAGE_EPS = 1e-6


@dataclass
class DNCConfig:
    """Hyper-parameters of a :class:`DNC`."""

    input_size: int = 9
    output_size: int = 8
    controller: str = "lstm"
    controller_size: int = 100
    memory_slots: int = 32  # N
    word_size: int = 20  # W
    read_heads: int = 2  # R
    controller_clip: float = 20.0
    usage_write_gradient: bool = False  # differentiate usage w.r.t. w^w_{t-1} (deepmind/dnc: no)

    def __post_init__(self) -> None:
        check_sizes(self, "input_size", "output_size", "controller_size", "memory_slots", "word_size", "read_heads")


class AccessState(NamedTuple):
    """Memory-access state of a DNC.

    Attributes:
        memory: ``(B, N, W)``.
        usage: ``(B, N)`` usage ``u``.
        link: ``(B, N, N)`` temporal link matrix ``L``.
        precedence: ``(B, N)`` precedence weighting ``p``.
        read_weights: ``(B, R, N)``.
        write_weights: ``(B, N)``.
        reads: ``(B, R, W)``.
    """

    memory: Tensor
    usage: Tensor
    link: Tensor
    precedence: Tensor
    read_weights: Tensor
    write_weights: Tensor
    reads: Tensor


class DNCState(NamedTuple):
    controller: ControllerState
    access: AccessState


class Interface(NamedTuple):
    read_keys: Tensor  # (B, R, W)
    read_strengths: Tensor  # (B, R)
    write_key: Tensor  # (B, 1, W)
    write_strength: Tensor  # (B, 1)
    erase: Tensor  # (B, 1, W)
    write_vector: Tensor  # (B, 1, W)
    free_gates: Tensor  # (B, R)
    allocation_gate: Tensor  # (B, 1)
    write_gate: Tensor  # (B, 1)
    read_modes: Tensor  # (B, R, 3)


def update_usage(usage: Tensor, write_weights: Tensor, free_gates: Tensor, read_weights: Tensor) -> Tensor:
    """``u_t = (u + w^w - u o w^w) o psi`` with ``psi = prod_i (1 - f_i w^r_i)``.

    Args: usage ``(B, N)``, write_weights ``(B, N)``, free_gates ``(B, R)``, read_weights ``(B, R, N)``.
    """
    usage = usage + write_weights - usage * write_weights
    retention = (1.0 - free_gates.unsqueeze(-1) * read_weights).prod(dim=1)  # (B, N)
    return usage * retention


def allocation_weighting(usage: Tensor) -> Tensor:
    """``a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i]``, ``phi`` the free list (usage ascending).

    Args: usage ``(B, N)``. Returns ``(B, N)``; sums to at most 1, all mass on the least-used
    slot when it is free. Ties are broken by index (a stable sort).
    """
    usage = USAGE_EPS + (1.0 - USAGE_EPS) * usage  # keeps cumprod away from exact zeros
    sorted_usage, phi = torch.sort(usage, dim=-1, stable=True)  # (B, N) each
    ones = torch.ones_like(sorted_usage[:, :1])
    exclusive = torch.cumprod(torch.cat([ones, sorted_usage[:, :-1]], dim=-1), dim=-1)  # prod_{i<j}
    sorted_alloc = (1.0 - sorted_usage) * exclusive
    return torch.zeros_like(usage).scatter(-1, phi, sorted_alloc)


def update_link(link: Tensor, precedence: Tensor, write_weights: Tensor) -> Tensor:
    """``L[i,j] = (1 - w[i] - w[j]) L[i,j] + w[i] p[j]`` with a zero diagonal.

    Args: link ``(B, N, N)``, precedence ``(B, N)`` (from ``t - 1``), write_weights ``(B, N)``.
    """
    w_i, w_j = write_weights.unsqueeze(-1), write_weights.unsqueeze(-2)  # (B, N, 1), (B, 1, N)
    link = (1.0 - w_i - w_j) * link + w_i * precedence.unsqueeze(-2)
    eye = torch.eye(link.shape[-1], dtype=torch.bool, device=link.device)
    return link.masked_fill(eye, 0.0)


def update_precedence(precedence: Tensor, write_weights: Tensor) -> Tensor:
    """``p_t = (1 - sum_i w[i]) p_{t-1} + w``. Args: both ``(B, N)``."""
    return (1.0 - write_weights.sum(-1, keepdim=True)) * precedence + write_weights


def directional_weights(link: Tensor, read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Forward ``f = L w^r`` and backward ``b = L^T w^r`` weightings.

    Args: link ``(B, N, N)``, read_weights ``(B, R, N)``. Returns two ``(B, R, N)``.
    """
    forward = read_weights @ link.transpose(1, 2)  # f_i = sum_j L[i, j] w[j]
    backward = read_weights @ link  # b_j = sum_i L[i, j] w[i]
    return forward, backward


class MemoryAccess(nn.Module):
    """DNC memory access: parses the interface vector and updates :class:`AccessState`."""

    def __init__(self, input_size: int, memory_slots: int, word_size: int, read_heads: int,
                 usage_write_gradient: bool = False):
        super().__init__()
        self.N, self.W, self.R = memory_slots, word_size, read_heads
        self.usage_write_gradient = usage_write_gradient
        W, R = word_size, read_heads
        self.sizes = [R * W, R, W, 1, W, W, R, 1, 1, R * 3]
        self.interface = nn.Linear(input_size, sum(self.sizes))

    def parse(self, h: Tensor) -> Interface:
        B, W, R = h.shape[0], self.W, self.R
        p = torch.split(self.interface(h), self.sizes, dim=-1)
        return Interface(
            read_keys=p[0].view(B, R, W),
            read_strengths=1.0 + F.softplus(p[1]),
            write_key=p[2].view(B, 1, W),
            write_strength=1.0 + F.softplus(p[3]),
            erase=torch.sigmoid(p[4]).view(B, 1, W),
            write_vector=p[5].view(B, 1, W),
            free_gates=torch.sigmoid(p[6]),
            allocation_gate=torch.sigmoid(p[7]),
            write_gate=torch.sigmoid(p[8]),
            read_modes=torch.softmax(p[9].view(B, R, 3), dim=-1),
        )

    def initial_state(self, batch_size: int, like: Tensor) -> AccessState:
        N, W, R = self.N, self.W, self.R
        z = like.new_zeros
        return AccessState(z(batch_size, N, W), z(batch_size, N), z(batch_size, N, N), z(batch_size, N),
                           z(batch_size, R, N), z(batch_size, N), z(batch_size, R, W))

    def forward(self, h: Tensor, state: AccessState) -> AccessState:
        """One access step. Args: h ``(B, input_size)`` controller output."""
        i = self.parse(h)
        previous_writes = state.write_weights if self.usage_write_gradient else state.write_weights.detach()
        usage = update_usage(state.usage, previous_writes, i.free_gates, state.read_weights)
        alloc = allocation_weighting(usage)
        write_content = content_weighting(state.memory, i.write_key, i.write_strength).squeeze(1)  # (B, N)
        ga, gw = i.allocation_gate, i.write_gate  # (B, 1)
        write_w = gw * (ga * alloc + (1.0 - ga) * write_content)  # (B, N)
        memory = write_memory(state.memory, write_w.unsqueeze(1), i.erase, i.write_vector)
        link = update_link(state.link, state.precedence, write_w)
        precedence = update_precedence(state.precedence, write_w)
        forward, backward = directional_weights(link, state.read_weights)
        content = content_weighting(memory, i.read_keys, i.read_strengths)  # (B, R, N)
        pi = i.read_modes
        read_w = pi[..., 0:1] * backward + pi[..., 1:2] * content + pi[..., 2:3] * forward
        reads = read_memory(memory, read_w)
        return AccessState(memory, usage, link, precedence, read_w, write_w, reads)


@register_memory_model("dnc", DNCConfig)
class DNC(RecurrentMemory):
    """Controller + :class:`MemoryAccess`; ``y_t = W_y [h_t, r_t]``."""

    def __init__(self, config: DNCConfig):
        super().__init__()
        c = self.config = config
        self.controller = make_controller(
            c.controller, c.input_size + c.read_heads * c.word_size, c.controller_size, c.controller_clip
        )
        self.access = MemoryAccess(c.controller_size, c.memory_slots, c.word_size, c.read_heads, c.usage_write_gradient)
        self.output = nn.Linear(c.controller_size + c.read_heads * c.word_size, c.output_size)

    def initial_state(self, batch_size: int, like: Tensor) -> DNCState:
        return DNCState(self.controller.initial_state(batch_size, like), self.access.initial_state(batch_size, like))

    def step(self, x: Tensor, state: DNCState) -> tuple[Tensor, DNCState]:
        batch = x.shape[0]
        h, ctrl = self.controller(torch.cat([x, state.access.reads.reshape(batch, -1)], dim=-1), state.controller)
        access = self.access(h, state.access)
        y = self.output(torch.cat([h, access.reads.reshape(batch, -1)], dim=-1))
        return y, DNCState(ctrl, access)

    def weightings(self, states: list[DNCState]) -> dict[str, Tensor]:
        """The write weighting and read head 0 of sequence 0 over time, each ``(N, T)``."""
        return {
            "write weighting": torch.stack([s.access.write_weights[0] for s in states], 1),
            "read weighting (head 0)": torch.stack([s.access.read_weights[0, 0] for s in states], 1),
        }
