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

from .checkpoint import CHECKPOINT, load, owned_by
from .config import RunConfig
from .envs import env_dims, evaluate, make_env
from .errors import RnmError, UsageError
from .folders import check_out_dir
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
    device: str
    """Where the episodes ran: the run's own device, or the CPU where this machine has no GPU."""


MAX_EPISODES = 10_000
"""Most episodes one `rnm eval` rolls out: hours of a slow env, not years."""


@dataclass(frozen=True)
class Source:
    """A checkpoint.pt and, where a run id of the database named it, the owner it must have (run and config hash)."""

    path: Path
    run_id: int | None = None
    config_hash: str | None = None


def checkpoint_of(run: str, db: str | None = None) -> Source:
    """The checkpoint.pt that `run` names: a folder (from `rnm train`) or the file itself, else a run id of the
    database (read-only). A usage error names what was looked for."""
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT
    if path.is_file():
        return Source(path)
    if not run.isascii() or not run.isdigit():
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
    return Source(Path(saved), int(run), str(row["config_hash"].iloc[0]))


def load_actor(source: Source) -> tuple[Actor, RunConfig, int]:
    """The saved actor (forward weights) with its run's config and the step it was saved at; a file that is not
    the named run's own checkpoint, or whose actor does not fit its env, is a usage error."""
    path = source.path
    try:
        saved = load(path)
    except RnmError as exc:
        raise UsageError(f"{path} is not an rnm checkpoint.pt ({exc})") from None
    weights = saved.get("actor") if isinstance(saved, dict) else None
    if not isinstance(weights, dict) or "config" not in saved:
        raise UsageError(f"{path} is not an rnm checkpoint.pt (no actor or config in it)")
    if source.run_id is not None and not owned_by(saved, {"run": source.run_id, "config": source.config_hash}):
        theirs = saved.get("owner") if isinstance(saved.get("owner"), dict) else {}
        raise UsageError(f"{path} is not run {source.run_id}'s own checkpoint (its owner is run {theirs.get('run')}): "
                         "the run's folder holds another run's file")
    config = RunConfig.from_dict(saved["config"])
    layers = [key for key in weights if isinstance(key, str) and key.endswith(".weight")]  # in layer order
    if not layers:
        raise UsageError(f"{path} is not an rnm checkpoint.pt (its actor has no layers)")
    obs_dim, act_dim = weights[layers[0]].shape[1], weights[layers[-1]].shape[0]
    expected = env_dims(config.env)
    if (obs_dim, act_dim) != expected:
        raise UsageError(f"the actor in {path} takes {obs_dim} observations and gives {act_dim} actions; "
                         f"{config.env} has {expected[0]} and {expected[1]}")
    actor = Actor(obs_dim, act_dim, config.hidden, -torch.ones(act_dim), torch.ones(act_dim))
    try:
        actor.load_state_dict(weights)  # the action bounds are buffers of the state dict
    except RuntimeError:
        raise UsageError(f"the actor in {path} does not have the layers its config gives (hidden "
                         f"{'x'.join(map(str, config.hidden))})") from None
    return actor.requires_grad_(False), config, int(saved.get("step", 0))


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


def rollout(source: Source, episodes: int | None = None, seed: int | None = None,
            video: Path | None = None) -> Rollout:
    """Noise-free episodes of the saved actor: by default the run's eval_episodes from the protocol's seed. A run
    trained on a GPU is rolled out on the CPU where this machine has none (`device` says which was used)."""
    actor, config, step = load_actor(source)
    episodes = config.eval_episodes if episodes is None else episodes
    if not 1 <= episodes <= MAX_EPISODES:
        raise UsageError(f"--episodes must be from 1 to {MAX_EPISODES:,} (got {episodes})")
    seed = config.seed + EVAL_SEED_OFFSET if seed is None else seed
    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed must be from 0 to {2**32 - 1:,} (got {seed})")
    device = config.device if config.device == "cpu" or torch.cuda.is_available() else "cpu"
    if video is not None:
        check_out_dir(video, "--video")
    env = video_env(config.env, video) if video is not None else make_env(config.env)
    try:
        returns = evaluate(env, greedy_policy(actor.to(device), config.replace(device=device)), episodes, seed)
    finally:
        env.close()
    return Rollout(returns, seed, step, config, device)
