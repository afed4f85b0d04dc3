"""TD3 semantics that live in the training loop: a time-limit truncation is stored as non-terminal."""

import gymnasium as gym
import numpy as np

from rnmtd3 import trainer as trainer_module
from rnmtd3.config import RunConfig
from rnmtd3.patterns import Pattern
from rnmtd3.replay import ReplayBuffer
from rnmtd3.sinks import MemorySink
from rnmtd3.trainer import train


class Walk(gym.Env):
    """A 1-D random walk shaped like Pendulum-v1 (3 observations, 1 action in [-2, 2]): terminates once |x| > 3,
    and the TimeLimit around it truncates at 6 steps, so a run sees both kinds of episode end."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0.0
        return self._obs(), {}

    def step(self, action):
        self.x += float(action[0])
        return self._obs(), -abs(self.x), abs(self.x) > 3, False, {}

    def _obs(self):
        return np.array([self.x, 0.0, 1.0], dtype=np.float32)


class EndsSeen(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.ends: list[tuple[bool, bool]] = []

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.ends.append((bool(terminated), bool(truncated)))
        return obs, reward, terminated, truncated, info


def test_truncation_is_stored_as_non_terminal(tmp_path, monkeypatch):
    envs, buffers = [], []

    def make_env(env_id):
        envs.append(EndsSeen(gym.wrappers.TimeLimit(Walk(), max_episode_steps=6)))
        return envs[-1]

    class Recording(ReplayBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            buffers.append(self)

    monkeypatch.setattr(trainer_module, "make_env", make_env)
    monkeypatch.setattr(trainer_module, "ReplayBuffer", Recording)
    # evaluation runs on the real Pendulum-v1, which has Walk's shapes
    config = RunConfig(env="Pendulum-v1", pattern=Pattern.parse("2:4"), seed=0, steps=120, start_steps=60,
                       batch_size=16, hidden=(16, 16), eval_interval=1000, eval_episodes=1)
    train(config, tmp_path, MemorySink(), resume=False)
    (env,), (replay,) = envs, buffers
    assert replay.size == len(env.ends) == 120
    stored = replay.terminated[:120, 0].tolist()
    assert stored == [float(terminated) for terminated, _ in env.ends]
    assert sum(truncated and not terminated for terminated, truncated in env.ends) >= 3
    assert sum(terminated for terminated, _ in env.ends) >= 3
