"""TD3's actor and critic: plain MLPs of nn.Linear layers, which SparseParams then makes N:M sparse."""

from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int], out_activation: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_activation is not None:
        layers.append(out_activation)
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Deterministic policy: tanh output rescaled to the action box [low, high]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim], nn.Tanh())
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.action_scale + self.action_bias


class Critic(nn.Module):
    """Q(s, a): the observation and action concatenated, so the first layer's width is obs_dim + act_dim."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=1))
