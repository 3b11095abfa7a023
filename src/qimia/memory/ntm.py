"""Neural Turing Machine (Graves, Wayne & Danihelka, 2014).

One step at time ``t`` (write before read, as in the DNC)::

    h_t           = controller([x_t, r_{t-1}])                       # (B, C)
    w^w_t         = address(M_{t-1}, w^w_{t-1}, params_w(h_t))       # write weightings (B, Hw, N)
    M_t           = erase-then-add(M_{t-1}, w^w_t, e_t, a_t)
    w^r_t         = address(M_t, w^r_{t-1}, params_r(h_t))           # read weightings (B, Hr, N)
    r_t           = w^r_t M_t                                        # (B, Hr, W)
    y_t           = W_y [h_t, r_t]                                   # output logits

Memory starts at a small constant (1e-6, which Collier & Beel, 2018, found trains most
reliably), weightings start focused on row 0 and the initial reads are learned biases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from qimia.memory.addressing import ntm_address
from qimia.memory.controllers import ControllerState, make_controller
from qimia.memory.heads import NTMHeadParams, read_memory, write_memory


@dataclass
class NTMConfig:
    """Hyper-parameters of an :class:`NTM` (defaults follow the paper's copy setup)."""

    input_size: int = 9
    output_size: int = 8
    controller: str = "lstm"  # "lstm" or "ff"
    controller_size: int = 100
    memory_slots: int = 128  # N
    word_size: int = 20  # W
    read_heads: int = 1
    write_heads: int = 1
    shift_range: int = 1  # K: shifts in [-K, K]
    controller_clip: float = 20.0
    memory_init: float = 1e-6


class NTMState(NamedTuple):
    """State of an NTM after a step.

    Attributes:
        controller: controller state (``(h, c)`` for LSTM, ``()`` for feed-forward).
        memory: ``(B, N, W)``.
        read_weights: ``(B, Hr, N)``.
        write_weights: ``(B, Hw, N)``.
        reads: ``(B, Hr, W)`` last read vectors.
    """

    controller: ControllerState
    memory: Tensor
    read_weights: Tensor
    write_weights: Tensor
    reads: Tensor


class NTM(nn.Module):
    """Neural Turing Machine with a feed-forward or LSTM controller and several heads."""

    def __init__(self, config: NTMConfig):
        super().__init__()
        c = self.config = config
        if c.read_heads < 1 or c.write_heads < 1:
            raise ValueError("an NTM needs at least one read head and one write head")
        self.controller = make_controller(
            c.controller, c.input_size + c.read_heads * c.word_size, c.controller_size, c.controller_clip
        )
        self.write_params = NTMHeadParams(c.controller_size, c.write_heads, c.word_size, c.shift_range, write=True)
        self.read_params = NTMHeadParams(c.controller_size, c.read_heads, c.word_size, c.shift_range)
        self.output = nn.Linear(c.controller_size + c.read_heads * c.word_size, c.output_size)
        self.initial_reads = nn.Parameter(torch.randn(c.read_heads, c.word_size) * 0.01)

    def initial_state(self, batch_size: int, like: Tensor) -> NTMState:
        """Initial state on ``like``'s device and dtype."""
        c = self.config
        focus = like.new_zeros(batch_size, 1, c.memory_slots)
        focus[..., 0] = 1.0  # (B, 1, N): all weight on row 0
        return NTMState(
            controller=self.controller.initial_state(batch_size, like),
            memory=like.new_full((batch_size, c.memory_slots, c.word_size), c.memory_init),
            read_weights=focus.expand(-1, c.read_heads, -1).clone(),
            write_weights=focus.expand(-1, c.write_heads, -1).clone(),
            reads=self.initial_reads.to(like).expand(batch_size, -1, -1),
        )

    def step(self, x: Tensor, state: NTMState) -> tuple[Tensor, NTMState]:
        """One time step. Args: x: ``(B, input_size)``. Returns: logits ``(B, output_size)``, state."""
        batch = x.shape[0]
        h, ctrl = self.controller(torch.cat([x, state.reads.reshape(batch, -1)], dim=-1), state.controller)
        wp = self.write_params(h)
        write_w = ntm_address(state.memory, state.write_weights, wp.keys, wp.strengths, wp.gates, wp.shifts, wp.gammas)
        memory = write_memory(state.memory, write_w, wp.erase, wp.add)
        rp = self.read_params(h)
        read_w = ntm_address(memory, state.read_weights, rp.keys, rp.strengths, rp.gates, rp.shifts, rp.gammas)
        reads = read_memory(memory, read_w)  # (B, Hr, W)
        y = self.output(torch.cat([h, reads.reshape(batch, -1)], dim=-1))
        return y, NTMState(ctrl, memory, read_w, write_w, reads)

    def forward(self, inputs: Tensor, state: NTMState | None = None, trace: bool = False):
        """Run over a sequence.

        Args:
            inputs: ``(B, T, input_size)``.
            state: optional initial state.
            trace: also return the list of states (for weighting plots).

        Returns:
            logits ``(B, T, output_size)`` and the final state (plus the list of states if ``trace``).
        """
        check_input(inputs, self.config.input_size)
        state = self.initial_state(inputs.shape[0], inputs) if state is None else state
        outs, states = [], []
        for t in range(inputs.shape[1]):
            y, state = self.step(inputs[:, t], state)
            outs.append(y)
            if trace:
                states.append(state)
        logits = torch.stack(outs, dim=1)  # (B, T, O)
        return (logits, state, states) if trace else (logits, state)


def check_input(inputs: Tensor, input_size: int) -> None:
    """Raise a clear error unless ``inputs`` is ``(B, T, input_size)``."""
    if inputs.dim() != 3 or inputs.shape[-1] != input_size:
        raise ValueError(f"expected inputs of shape (B, T, {input_size}), got {tuple(inputs.shape)}")
