"""Environment names, construction and the evaluation protocol (MISSION.md section 3)."""

from __future__ import annotations

import functools
import re
from typing import Callable

import gymnasium as gym
import numpy as np

from .errors import UsageError

_VERSIONED = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")
MUJOCO_ENTRY = "gymnasium.envs.mujoco"


def _registered() -> dict[str, list[tuple[int, str]]]:
    versions: dict[str, list[tuple[int, str]]] = {}
    for env_id in gym.registry:
        match = _VERSIONED.match(env_id)
        if match and "/" not in env_id:
            versions.setdefault(match["name"], []).append((int(match["version"]), env_id))
    return versions


def mujoco_names() -> list[str]:
    """Short names of the Gymnasium MuJoCo tasks (Ant, HalfCheetah, Hopper, ...)."""
    return sorted(
        name
        for name, ids in _registered().items()
        if any(str(gym.registry[env_id].entry_point).startswith(MUJOCO_ENTRY) for _, env_id in ids)
    )


def resolve_env_id(name: str) -> str:
    """`Hopper` -> `Hopper-v5` (the newest version); a full registered id is returned as it is.

    Either way the env is built once (env_dims) and refused here, at queue time, if TD3 cannot train on it.
    """
    text = name.strip()
    if text in gym.registry:
        env_id = text
    else:
        matches = [ids for short, ids in _registered().items() if short.lower() == text.lower()]
        if not matches:
            raise UsageError(f"unknown env {name!r}; valid names: {', '.join(mujoco_names())} (or a full Gymnasium id)")
        env_id = max(matches[0])[1]
    env_dims(env_id)
    return env_id


@functools.cache
def env_dims(env_id: str) -> tuple[int, int]:
    """(observation size, action size) of a registered env: what a run's replay buffer and networks are sized by.

    Cached, since queueing a sweep and planning workers ask about the same few envs many times.
    """
    try:
        env = gym.make(env_id)
    except gym.error.Error as exc:  # a missing dependency (Box2D, MuJoCo), a bad id
        raise UsageError(f"env {env_id!r} cannot be made here: {exc}") from None
    try:
        if not isinstance(env.action_space, gym.spaces.Box):
            raise UsageError(f"env {env_id!r} has a discrete action space; TD3 needs continuous actions (a Box)")
        return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    finally:
        env.close()


def make_env(env_id: str) -> gym.Env:
    env = gym.make(env_id)
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise UsageError(f"env {env_id!r} has a discrete action space; TD3 needs continuous actions")
    return env


def evaluate(env: gym.Env, policy: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> np.ndarray:
    """Returns of `episodes` noise-free episodes; the first reset is seeded, so every evaluation sees the same starts."""
    returns = np.zeros(episodes)
    obs, _ = env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            obs, _ = env.reset()
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            returns[episode] += float(reward)
            done = terminated or truncated
    return returns
