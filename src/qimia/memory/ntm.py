"""Neural Turing Machine (Graves, Wayne & Danihelka, 2014).

One step at time ``t`` (write before read, as in the DNC; ``read_first=True`` reads ``M_{t-1}`` first)::

    h_t           = controller([x_t, r_{t-1}])                       # (B, C)
    w^w_t         = address(M_{t-1}, w^w_{t-1}, params_w(h_t))       # write weightings (B, Hw, N)
    M_t           = erase-then-add(M_{t-1}, w^w_t, e_t, a_t)
    w^r_t         = address(M_t, w^r_{t-1}, params_r(h_t))           # read weightings (B, Hr, N)
    r_t           = w^r_t M_t                                        # (B, Hr, W)
    y_t           = W_y [h_t, r_t]                                   # output logits

By default memory starts at a small constant (1e-6, which Collier & Beel, 2018, found trains most
reliably), weightings start focused on row 0, add vectors go through ``tanh`` and the initial reads
are learned biases. Four options give loudinthecloud/pytorch-ntm's choices instead:
``memory_init_mode="uniform"`` (a fixed, not learned, buffer drawn once from
``U(-1/sqrt(N+W), 1/sqrt(N+W))``, the same for every sequence), ``initial_weighting="zero"`` (the
first weighting comes from content addressing alone; needs the uniform memory, since a constant one
never breaks the symmetry between rows), ``read_first=True`` (read ``M_{t-1}``, then write) and
``add_activation="linear"``. None of them, alone, removed the collapse of the copy task under the
paper's RMSprop recipe in the runs of docs/memory.md, so the defaults are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from qimia.addressing import ntm_address
from qimia.memory.controllers import ControllerState, check_sizes, make_controller
from qimia.memory.heads import NTMHeadParams, read_memory, write_memory
from qimia.memory.recurrent import RecurrentMemory
from qimia.memory.registry import register_memory_model


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
    memory_init: float = 1e-6  # the constant of memory_init_mode="constant"
    memory_init_mode: str = "constant"  # "constant" (memory_init everywhere) | "uniform" (loudinthecloud/pytorch-ntm)
    initial_weighting: str = "first_row"  # "first_row" (all weight on row 0) | "zero" (pytorch-ntm)
    read_first: bool = False  # read M_{t-1} before the write (pytorch-ntm) instead of M_t after it
    add_activation: str = "tanh"  # "tanh" | "linear" (pytorch-ntm) for the write heads' add vectors

    def __post_init__(self) -> None:
        check_sizes(self, "input_size", "output_size", "controller_size", "memory_slots", "word_size", "read_heads",
                    "write_heads", "shift_range")
        for key, allowed in (("memory_init_mode", ("constant", "uniform")),
                             ("initial_weighting", ("first_row", "zero")), ("add_activation", ("tanh", "linear"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"NTM: {key} must be one of {allowed}, got {getattr(self, key)!r}.")
        if self.initial_weighting == "zero" and self.memory_init_mode == "constant":
            raise ValueError("NTM: initial_weighting='zero' with a constant memory never breaks the symmetry between "
                             "rows (every weighting stays uniform); use memory_init_mode='uniform' with it.")
        if 2 * self.shift_range + 1 > self.memory_slots:
            raise ValueError(f"NTM: shifts of up to {self.shift_range} rows need memory_slots >= "
                             f"{2 * self.shift_range + 1}, got {self.memory_slots}.")


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


@register_memory_model("ntm", NTMConfig)
class NTM(RecurrentMemory):
    """Neural Turing Machine with a feed-forward or LSTM controller and several heads."""

    def __init__(self, config: NTMConfig):
        super().__init__()
        c = self.config = config
        self.controller = make_controller(
            c.controller, c.input_size + c.read_heads * c.word_size, c.controller_size, c.controller_clip
        )
        self.write_params = NTMHeadParams(c.controller_size, c.write_heads, c.word_size, c.shift_range, write=True,
                                          add_activation=c.add_activation)
        self.read_params = NTMHeadParams(c.controller_size, c.read_heads, c.word_size, c.shift_range)
        self.output = nn.Linear(c.controller_size + c.read_heads * c.word_size, c.output_size)
        self.initial_reads = nn.Parameter(torch.randn(c.read_heads, c.word_size) * 0.01)
        if c.memory_init_mode == "uniform":  # drawn last, so the parameters match the constant-memory model's
            bound = 1.0 / (c.memory_slots + c.word_size) ** 0.5
            self.register_buffer("memory_bias", torch.empty(c.memory_slots, c.word_size).uniform_(-bound, bound))

    def initial_state(self, batch_size: int, like: Tensor) -> NTMState:
        """Initial state on ``like``'s device and dtype."""
        c = self.config
        focus = like.new_zeros(batch_size, 1, c.memory_slots)
        if c.initial_weighting == "first_row":
            focus[..., 0] = 1.0  # (B, 1, N): all weight on row 0
        if c.memory_init_mode == "uniform":
            memory = self.memory_bias.to(like).expand(batch_size, -1, -1)
        else:
            memory = like.new_full((batch_size, c.memory_slots, c.word_size), c.memory_init)
        return NTMState(
            controller=self.controller.initial_state(batch_size, like),
            memory=memory,
            read_weights=focus.expand(-1, c.read_heads, -1).clone(),
            write_weights=focus.expand(-1, c.write_heads, -1).clone(),
            reads=self.initial_reads.to(like).expand(batch_size, -1, -1),
        )

    def step(self, x: Tensor, state: NTMState) -> tuple[Tensor, NTMState]:
        """One time step. Args: x: ``(B, input_size)``. Returns: logits ``(B, output_size)``, state."""
        batch = x.shape[0]
        h, ctrl = self.controller(torch.cat([x, state.reads.reshape(batch, -1)], dim=-1), state.controller)
        wp = self.write_params(h)
        rp = self.read_params(h)
        write_w = ntm_address(state.memory, state.write_weights, wp.keys, wp.strengths, wp.gates, wp.shifts, wp.gammas)
        memory = write_memory(state.memory, write_w, wp.erase, wp.add)
        read_from = state.memory if self.config.read_first else memory              # M_{t-1} or M_t
        read_w = ntm_address(read_from, state.read_weights, rp.keys, rp.strengths, rp.gates, rp.shifts, rp.gammas)
        reads = read_memory(read_from, read_w)                                       # (B, Hr, W)
        y = self.output(torch.cat([h, reads.reshape(batch, -1)], dim=-1))
        return y, NTMState(ctrl, memory, read_w, write_w, reads)

    def weightings(self, states: list[NTMState]) -> dict[str, Tensor]:
        """Write head 0 and read head 0 of sequence 0 over time, each ``(N, T)``."""
        return {
            "write weighting": torch.stack([s.write_weights[0, 0] for s in states], 1),
            "read weighting (head 0)": torch.stack([s.read_weights[0, 0] for s in states], 1),
        }
