"""Recurrent Attention Model (Mnih, Heess, Graves & Kavukcuoglu, 2014): hard attention by glimpses.

At each of ``T`` steps, with location ``l_{t-1}`` in ``[-1, 1]^2``::

    rho_t = sensor(x, l_{t-1})                         # k retina patches of g x g, scales g, 2g, 4g, ...
    g_t   = ReLU(W_1 ReLU(W_g rho_t) + W_2 ReLU(W_l l_{t-1}))   # glimpse network f_g
    h_t   = ReLU(W_h h_{t-1} + W_i g_t)                 # recurrent core f_h (rectifier units)
    mu_t  = tanh(W_m h_t);  l_t ~ N(mu_t, sigma^2 I)    # location network f_l (Gaussian policy)
    b_t   = W_b h_t                                     # learned baseline
    y     = softmax(W_a h_T)                            # action (classification) network

Training (hybrid loss): ``NLL(y) + sum_t (R - b_t)^2 - sum_t log pi(l_t | h_t) (R - b_t)``,
with reward ``R = 1`` for a correct classification. The sampled ``l_t`` is detached, and so is
the core state fed to the location and baseline networks, so the location network learns only
through the REINFORCE log-probability term, and the baseline only through its squared error.

Location convention: ``l = (x, y)`` as in ``grid_sample``: ``(-1, -1)`` is the top-left corner
of the image, ``(1, 1)`` the bottom-right; ``x`` indexes columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GlimpseSensor(nn.Module):
    """Retina: ``scales`` square patches around ``l``, of ``patch * 2^s`` pixels, each pooled to ``patch x patch``.

    Args:
        patch: ``g``, the side of each (pooled) patch in pixels.
        scales: ``k``, number of patches.
        scale_factor: side ratio between successive patches (2 in the paper).
    """

    def __init__(self, patch: int = 8, scales: int = 1, scale_factor: int = 2):
        super().__init__()
        self.patch, self.scales, self.scale_factor = patch, scales, scale_factor

    @property
    def out_features(self) -> int:
        return self.scales * self.patch * self.patch

    def extract(self, images: Tensor, loc: Tensor, size: int) -> Tensor:
        """Crop a ``size x size`` pixel window centred on ``loc`` (zero padding outside).

        Args: images ``(B, C, H, W)``; loc ``(B, 2)``. Returns ``(B, C, size, size)``.
        """
        B, _, H, W = images.shape
        # pixel centres of the window, in normalised coordinates (align_corners=False convention)
        offsets = (torch.arange(size, device=images.device, dtype=images.dtype) - (size - 1) / 2)  # (size,)
        xs = loc[:, 0:1] + offsets[None] * (2.0 / W)  # (B, size)
        ys = loc[:, 1:2] + offsets[None] * (2.0 / H)
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)  # (B, size, size, 2)
        return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def forward(self, images: Tensor, loc: Tensor) -> Tensor:
        """Args: images ``(B, C, H, W)``; loc ``(B, 2)``. Returns ``rho`` ``(B, scales * C * g * g)``."""
        patches = []
        for s in range(self.scales):
            size = self.patch * self.scale_factor**s
            window = self.extract(images, loc, size)  # (B, C, size, size)
            patches.append(F.avg_pool2d(window, self.scale_factor**s) if s else window)  # (B, C, g, g)
        return torch.cat([p.flatten(1) for p in patches], dim=1)


class RAMState(NamedTuple):
    """Attributes: hidden ``(B, H)`` core state; location ``(B, 2)`` the next glimpse's centre."""

    hidden: Tensor
    location: Tensor


class RAMStep(NamedTuple):
    """What one step produced: the state, the policy mean, the log-probability of the sampled location
    ``(B,)`` and the baseline ``(B,)``."""

    state: RAMState
    mean: Tensor
    log_prob: Tensor
    baseline: Tensor


@dataclass
class RAMConfig:
    image_channels: int = 1
    patch: int = 8
    scales: int = 1
    glimpse_hidden: int = 128  # h_g and h_l width
    glimpse_size: int = 256  # g_t width
    hidden: int = 256  # core width
    num_classes: int = 10
    glimpses: int = 6
    std: float = 0.1  # policy standard deviation sigma
    location_hidden: int = 0  # 0: mu = tanh(W_m h); > 0: mu = tanh(W_2 ReLU(W_1 h)) with this width


class RecurrentAttentionModel(nn.Module):
    """The RAM; :meth:`forward` returns class logits and the per-step REINFORCE terms."""

    def __init__(self, config: RAMConfig):
        super().__init__()
        c = self.config = config
        self.sensor = GlimpseSensor(c.patch, c.scales)
        rho = self.sensor.out_features * c.image_channels
        self.glimpse_what, self.glimpse_where = nn.Linear(rho, c.glimpse_hidden), nn.Linear(2, c.glimpse_hidden)
        self.glimpse_out1 = nn.Linear(c.glimpse_hidden, c.glimpse_size)
        self.glimpse_out2 = nn.Linear(c.glimpse_hidden, c.glimpse_size)
        self.core_h, self.core_g = nn.Linear(c.hidden, c.hidden), nn.Linear(c.glimpse_size, c.hidden)
        # f_l: linear (Mnih et al. 2014) or with one hidden layer (kevinzakka/recurrent-visual-attention)
        self.location_net = (nn.Linear(c.hidden, 2) if c.location_hidden == 0 else
                             nn.Sequential(nn.Linear(c.hidden, c.location_hidden), nn.ReLU(), nn.Linear(c.location_hidden, 2)))
        self.baseline_net = nn.Linear(c.hidden, 1)
        self.classifier = nn.Linear(c.hidden, c.num_classes)

    def glimpse(self, images: Tensor, loc: Tensor) -> Tensor:
        """``g_t = ReLU(W_1 ReLU(W_g rho) + W_2 ReLU(W_l l))``, ``(B, glimpse_size)``."""
        what = F.relu(self.glimpse_what(self.sensor(images, loc)))
        where = F.relu(self.glimpse_where(loc))
        return F.relu(self.glimpse_out1(what) + self.glimpse_out2(where))

    def initial_state(self, images: Tensor, generator: torch.Generator | None = None) -> RAMState:
        """Zero core state and a uniformly random first location in ``[-1, 1]^2``."""
        B = images.shape[0]
        loc = torch.rand(B, 2, generator=generator).to(images) * 2 - 1  # (B, 2)
        return RAMState(images.new_zeros(B, self.config.hidden), loc)

    def step(self, images: Tensor, state: RAMState, sample: bool = True,
             generator: torch.Generator | None = None) -> RAMStep:
        g = self.glimpse(images, state.location)
        h = F.relu(self.core_h(state.hidden) + self.core_g(g))  # (B, H)
        mean = torch.tanh(self.location_net(h.detach()))  # (B, 2); location net trained by REINFORCE only
        std = self.config.std
        noise = torch.randn(mean.shape, generator=generator).to(mean) if generator is not None else torch.randn_like(mean)
        loc = (mean + std * noise).detach() if sample else mean.detach()
        # log N(l; mu, sigma^2 I), summed over the two coordinates
        log_prob = (-((loc - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
        baseline = self.baseline_net(h.detach()).squeeze(-1)  # (B,)
        return RAMStep(RAMState(h, loc.clamp(-1.0, 1.0)), mean, log_prob, baseline)

    def forward(self, images: Tensor, sample: bool = True, state: RAMState | None = None,
                generator: torch.Generator | None = None):
        """Args: images ``(B, C, H, W)``; ``generator`` draws the sampled locations' noise
        (default: the global generator). Returns logits ``(B, classes)``, log_probs ``(B, T)``,
        baselines ``(B, T)`` and the glimpse locations ``(B, T, 2)`` (including the first)."""
        if images.dim() != 4 or images.shape[1] != self.config.image_channels:
            raise ValueError(f"expected images (B, {self.config.image_channels}, H, W), got {tuple(images.shape)}")
        state = self.initial_state(images) if state is None else state
        log_probs, baselines, locations = [], [], []
        for _ in range(self.config.glimpses):
            locations.append(state.location)
            out = self.step(images, state, sample, generator)
            state = out.state
            log_probs.append(out.log_prob)
            baselines.append(out.baseline)
        # the last sampled location is never looked at: drop its log-prob / baseline
        return (self.classifier(state.hidden), torch.stack(log_probs[:-1], 1), torch.stack(baselines[:-1], 1),
                torch.stack(locations, 1))


class RAMLoss(NamedTuple):
    total: Tensor
    classification: Tensor
    reinforce: Tensor
    baseline: Tensor
    reward: Tensor


def ram_loss(logits: Tensor, labels: Tensor, log_probs: Tensor, baselines: Tensor,
             reinforce_weight: float = 1.0) -> RAMLoss:
    """Hybrid loss: NLL + ``reinforce_weight`` x REINFORCE with baseline + baseline MSE; reward = 1
    if correct (Mnih et al. 2014 weigh the terms equally; kevinzakka/recurrent-visual-attention
    uses ``reinforce_weight=0.01``).

    Args: logits ``(B, K)``; labels ``(B,)``; log_probs, baselines ``(B, T)``.
    """
    nll = F.cross_entropy(logits, labels)
    reward = (logits.argmax(-1) == labels).float()  # (B,)
    advantage = (reward[:, None] - baselines).detach()  # (B, T)
    reinforce = -(log_probs * advantage).sum(1).mean()
    base = F.mse_loss(baselines, reward[:, None].expand_as(baselines))
    return RAMLoss(nll + reinforce_weight * reinforce + base, nll, reinforce, base, reward.mean())
