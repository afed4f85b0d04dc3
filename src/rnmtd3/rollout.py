"""Roll out a saved actor (`rnm eval`): look at a policy without training, and check a recorded number.

The rollout is the evaluation protocol's own (envs.evaluate with the trainer's greedy policy, autocast included),
so with the protocol's seed (the run's seed + 100) and its episode count a finished run's checkpoint gives back
its last recorded evaluation exactly (fp32; bf16 matches on the machine that trained it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from .checkpoint import CHECKPOINT, load
from .config import RunConfig
from .envs import evaluate, make_env
from .errors import UsageError
from .evaluator import greedy_policy
from .networks import Actor

EVAL_SEED_OFFSET = 100
"""The evaluation env is seeded seed + 100 (MISSION.md section 3)."""


@dataclass(frozen=True)
class Rollout:
    returns: np.ndarray
    seed: int
    step: int
    config: RunConfig


def checkpoint_of(run: str, db: str | None = None) -> Path:
    """The checkpoint.pt that `run` names: a folder (from `rnm train`) or the file itself, else a run id of the
    database. A usage error names what was looked for."""
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT
    if path.is_file():
        return path
    if not run.isdigit():
        raise UsageError(f"no checkpoint at {run!r}: give a run id (`rnm status`, `rnm export runs`) or a folder "
                         "from `rnm train`")
    from .registry import open_registry  # noqa: PLC0415 (a folder needs no database)

    with open_registry(db, create=False, read_only=True) as registry:
        runs = registry.runs_frame()
    row = runs[runs["run_id"] == int(run)]
    if row.empty:
        raise UsageError(f"no run {run} in the database (and no folder {run!r})")
    saved = row["checkpoint"].iloc[0]
    if not saved or not Path(saved).is_file():
        where = f" ({saved} is not on this machine)" if saved else ""
        raise UsageError(f"run {run} has no checkpoint yet{where}")
    return Path(saved)


def load_actor(path: Path) -> tuple[Actor, RunConfig, int]:
    """The saved actor (forward weights) with its run's config and the step it was saved at."""
    saved = load(path)
    if not isinstance(saved, dict) or "actor" not in saved or "config" not in saved:
        raise UsageError(f"{path} is not an rnm checkpoint.pt (no actor or config in it)")
    config = RunConfig.from_dict(saved["config"])
    weights = saved["actor"]
    layers = [key for key in weights if key.endswith(".weight")]  # a state dict lists its layers in order
    obs_dim, act_dim = weights[layers[0]].shape[1], weights[layers[-1]].shape[0]
    actor = Actor(obs_dim, act_dim, config.hidden, -torch.ones(act_dim), torch.ones(act_dim))
    actor.load_state_dict(weights)  # the action bounds are buffers of the state dict
    return actor.to(config.device).requires_grad_(False), config, int(saved.get("step", 0))


def video_env(env_id: str, folder: Path) -> gym.Env:
    """The env wrapped by gymnasium's RecordVideo (one MP4 per episode), or a usage error saying what is missing:
    moviepy, or a MuJoCo renderer that works without a display (MUJOCO_GL=egl with a GPU, osmesa without)."""
    try:
        import moviepy  # noqa: F401, PLC0415
    except ImportError:
        raise UsageError("--video needs moviepy: pip install moviepy") from None
    env = gym.make(env_id, render_mode="rgb_array")
    try:
        env.reset(seed=0)
        env.render()
    except Exception as exc:  # no display, no EGL or OSMesa: each backend fails in its own way
        env.close()
        raise UsageError(f"--video needs a MuJoCo renderer that works without a display: set MUJOCO_GL=egl (with "
                         f"a GPU) or MUJOCO_GL=osmesa (apt install libosmesa6); here: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return gym.wrappers.RecordVideo(env, str(folder), episode_trigger=lambda _: True, disable_logger=True)


def rollout(path: Path, episodes: int | None = None, seed: int | None = None,
            video: Path | None = None) -> Rollout:
    """Noise-free episodes of the saved actor: by default the run's eval_episodes from the protocol's seed."""
    actor, config, step = load_actor(path)
    episodes = config.eval_episodes if episodes is None else episodes
    if episodes < 1:
        raise UsageError(f"--episodes must be at least 1 (got {episodes})")
    seed = config.seed + EVAL_SEED_OFFSET if seed is None else seed
    env = video_env(config.env, video) if video is not None else make_env(config.env)
    try:
        returns = evaluate(env, greedy_policy(actor, config), episodes, seed)
    finally:
        env.close()
    return Rollout(returns, seed, step, config)
