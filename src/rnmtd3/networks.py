"""TD3's actor and critic: plain MLPs of nn.Linear layers, which SparseParams then makes N:M sparse."""

from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Deterministic policy: tanh output rescaled to the action box [low, high].

    The tanh runs in fp32 even under bf16 autocast: in bf16, tanh(x) rounds to exactly 1 from x of about 3, its
    gradient 1 - tanh(x)^2 is then exactly 0, and an actor pushed there never comes back (seen: 2 of 6 bf16
    Hopper runs stuck at return 38 from step 28k, against 0 of 6 in fp32).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim])
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs).float()) * self.action_scale + self.action_bias


class Critic(nn.Module):
    """Q(s, a): the observation and action concatenated, so the first layer's width is obs_dim + act_dim.

    The last layer runs in fp32 even under bf16 autocast, so Q is always an fp32 tensor: a bf16 Q of about 1000
    lies on a grid of steps of 4 to 8, about one step's reward, so the TD error would be mostly rounding. One
    hidden-wide dot product per sample costs nothing next to the hidden layers.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=1)
        *body, head = self.net
        for layer in body:
            x = layer(x)
        with torch.autocast(x.device.type, enabled=False):
            return head(x.float())
