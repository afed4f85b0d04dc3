"""A preallocated ring buffer of transitions, sampled with an explicit generator for reproducibility."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """Storage is torch.empty, so memory is only touched as transitions arrive, not at construction."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: torch.device | str = "cpu"):
        self.capacity = capacity
        self.device = torch.device(device)
        self.obs = torch.empty((capacity, obs_dim), dtype=torch.float32)
        self.next_obs = torch.empty((capacity, obs_dim), dtype=torch.float32)
        self.actions = torch.empty((capacity, act_dim), dtype=torch.float32)
        self.rewards = torch.empty((capacity, 1), dtype=torch.float32)
        self.terminated = torch.empty((capacity, 1), dtype=torch.float32)
        self.pos = 0
        self.size = 0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.pos
        self.obs[i] = torch.from_numpy(np.asarray(obs, dtype=np.float32))
        self.next_obs[i] = torch.from_numpy(np.asarray(next_obs, dtype=np.float32))
        self.actions[i] = torch.from_numpy(np.asarray(action, dtype=np.float32))
        self.rewards[i, 0] = reward
        self.terminated[i, 0] = float(terminated)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)
        fields = (self.obs, self.actions, self.rewards, self.next_obs, self.terminated)
        return Batch(*(f.index_select(0, idx).to(self.device, non_blocking=True) for f in fields))

    def state(self) -> dict[str, object]:
        """The filled part only, so a checkpoint early in a run stays small."""
        n = self.size
        return {"obs": self.obs[:n].clone(), "next_obs": self.next_obs[:n].clone(),
                "actions": self.actions[:n].clone(), "rewards": self.rewards[:n].clone(),
                "terminated": self.terminated[:n].clone(), "pos": self.pos, "size": self.size}

    def load_state(self, state: dict[str, object]) -> None:
        """Restore a saved buffer into this one, which may be larger (a run extended to more steps has a larger
        capacity, min(buffer_size, steps)).

        A buffer saved full (pos != size: its capacity was `size`) is laid out oldest-first when it grows, with
        the next transition stored after the newest, as a buffer of the larger capacity would have held them
        from the start; at its own capacity it keeps its ring layout, on which sampling depends.
        """
        n, pos = int(state["size"]), int(state["pos"])  # type: ignore[arg-type]
        if n > self.capacity:
            raise ValueError(f"a saved replay buffer of {n} transitions does not fit a capacity of {self.capacity}")
        grows = n < self.capacity and pos != n
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            saved = state[name]
            getattr(self, name)[:n] = saved.roll(-pos, 0) if grows else saved  # type: ignore[union-attr]
        self.pos, self.size = (n if grows else pos), n
