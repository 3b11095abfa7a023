from __future__ import annotations

import pytest
import torch
from torch import nn


class TokenMLP(nn.Module):
    """A shape-preserving block that mixes features, never positions: ``(..., D) -> (..., D)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(self.norm(x)))


class ConvBlock(nn.Module):
    """A shape-preserving image block ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def token_blocks(depth: int, dim: int) -> list[nn.Module]:
    return [TokenMLP(dim) for _ in range(depth)]


def conv_blocks(depth: int, channels: int) -> list[nn.Module]:
    return [ConvBlock(channels) for _ in range(depth)]
