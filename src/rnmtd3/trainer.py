"""The training loop of one run: act, store, update, masks, evaluate, checkpoint, and resume where it stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import RunConfig
from .envs import make_env
from .errors import UsageError
from .evaluator import Evaluator, greedy_policy, snapshot
from .replay import ReplayBuffer
from .sinks import Sink
from .td3 import TD3Agent

STATS_INTERVAL = 1_000
PROGRESS_INTERVAL = 100


@dataclass(frozen=True)
class TrainResult:
    steps_done: int
    finished: bool
    resumed_from: int
    last_return: float | None


def require_device(device: str) -> None:
    """Checked when a run starts, not when it is queued: the queueing machine may have no GPU."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={device} but this torch ({torch.__version__}) sees no CUDA device")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise UsageError(f"device={device} but this machine has {torch.cuda.device_count()} CUDA device(s)")


def train(config: RunConfig, run_dir: Path, sink: Sink, resume: bool = True,
          background_eval: bool = False, owner: dict | None = None) -> TrainResult:
    """Run `config` to `config.steps`, reporting to `sink`; resume from `run_dir`'s checkpoint when it is this run's.

    Checkpoints are taken at the first episode boundary after each checkpoint_interval, and when the sink asks
    to stop; at a boundary the environment's RNG state is all the simulator state a resume needs. The last one, at
    `config.steps`, may fall in mid-episode: it records how the episode began and its actions, which a resume
    replays, so that a run extended to more steps continues the episode as the longer run would have.
    `owner` (checkpoint.owner_of) stamps the files; a resume state with another owner, or one that cannot be read,
    is not resumed from: the run starts at step 0 and the sink hears why (`on_start`). A resume state carries the
    curve up to its step, which is reported again, so the sink ends with every evaluation of one line of
    checkpoints. `background_eval` evaluates in a helper process, for where a core is spare; the curve is the same.
    """
    require_device(config.device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Adam's moments of rarely-active (pruned) weights decay into denormals, which make CPU kernels several
    # times slower (measured: ReLU backward 350us -> 60us per call); flushing them to zero changes no result
    # that matters and is deterministic.
    torch.set_flush_denormal(True)
    device = torch.device(config.device)
    env = make_env(config.env)
    obs_dim = int(np.prod(env.observation_space.shape))
    act_dim = int(np.prod(env.action_space.shape))
    low = env.action_space.low.astype(np.float32)
    high = env.action_space.high.astype(np.float32)

    def fresh() -> tuple[TD3Agent, ReplayBuffer, torch.Generator, np.random.Generator]:
        """Everything that a resume state overwrites, as a run starting at step 0 has it."""
        return (TD3Agent(config, obs_dim, act_dim, torch.as_tensor(low, device=device),
                         torch.as_tensor(high, device=device)),
                ReplayBuffer(obs_dim, act_dim, min(config.buffer_size, config.steps), device),
                torch.Generator().manual_seed(config.seed), np.random.default_rng(config.seed))

    agent, replay, generator, rng = fresh()
    noise = torch.empty((config.batch_size, act_dim), dtype=torch.float32)
    expl_std = (high - low) / 2.0 * config.expl_noise
    evaluator = Evaluator(config, obs_dim, act_dim, low, high, background=background_eval)
    owner = owner or ckpt.owner_of(config)
    last_return: float | None = None
    curve: list[tuple[int, float, float, float]] = []

    def report(step: int, mean: float, std: float, wall_time: float) -> None:
        nonlocal last_return
        last_return = mean
        curve.append((step, mean, std, wall_time))
        sink.on_eval(step, mean, std, wall_time)

    def report_evals(results) -> None:
        for result in results:
            report(result.step, float(result.returns.mean()), float(result.returns.std()), result.wall_time)

    # How the episode under way began (the env's RNG state before its reset; None: the seeded first reset) and its
    # actions, so that a state saved in mid-episode (the last step) can be continued by a longer run.
    episode_reset: dict | None = None
    episode_actions: list[np.ndarray] = []
    try:
        state, restart_reason = ckpt.load_resume(run_dir, config, owner) if resume else (None, None)
        if state is not None:
            try:
                agent.load_state(state["agent"])
                replay.load_state(state["replay"])
                generator.set_state(state["rng"]["torch"])
                rng.bit_generator.state = state["rng"]["numpy"]
                env.unwrapped.np_random = np.random.default_rng()
                env.unwrapped.np_random.bit_generator.state = state["rng"]["env"]
                start, wall_offset = int(state["step"]), float(state["wall_time"])
                saved_curve = [(int(p[0]), float(p[1]), float(p[2]), float(p[3])) for p in state["curve"]]
                if state.get("episode") is not None:
                    episode_reset = state["episode"]["reset_rng"]
                    episode_actions = list(state["episode"]["actions"].numpy())
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:  # not whole
                restart_reason = (f"{run_dir / ckpt.RESUME} is not a whole resume state ({exc.__class__.__name__}: "
                                  f"{exc}); restarted from step 0")
                state, episode_reset, episode_actions = None, None, []
                agent, replay, generator, rng = fresh()
        episode_return = 0.0
        if state is not None:
            sink.on_start(start, None)
            for point in saved_curve:
                report(*point)
            if episode_actions:
                obs, episode_return = _replay_episode(env, episode_reset, episode_actions, config.seed)
                env.unwrapped.np_random.bit_generator.state = state["rng"]["env"]
            else:
                episode_reset = env.unwrapped.np_random.bit_generator.state
                obs, _ = env.reset()
        else:
            sink.on_start(0, restart_reason)
            start, wall_offset = 0, 0.0
            obs, _ = env.reset(seed=config.seed)
            evaluator.submit(0, 0.0, snapshot(agent.actor))
        resumed_from = start
        policy = greedy_policy(agent.actor, config)
        t0 = time.perf_counter()

        def wall() -> float:
            return wall_offset + time.perf_counter() - t0

        def save(step: int) -> None:
            report_evals(evaluator.drain())  # a resumed run must not miss an evaluation before its checkpoint
            sink.before_checkpoint(step)
            networks = agent.forward_state_dicts()
            ckpt.save_resume(run_dir, {
                "config": config.to_dict(), "owner": owner, "step": step, "wall_time": wall(), "curve": curve,
                "agent": agent.state(), "replay": replay.state(),
                "rng": {"torch": generator.get_state(), "numpy": rng.bit_generator.state,
                        "env": env.unwrapped.np_random.bit_generator.state},
                "episode": {"reset_rng": episode_reset, "actions": torch.from_numpy(np.stack(episode_actions))}
                if episode_actions else None,
            })
            path = ckpt.save_public(run_dir, networks, config, step, owner)
            sink.on_checkpoint(step, path)

        last_checkpoint = start
        window_start, window_time = start, time.perf_counter()
        losses: dict[str, list[float]] = {"critic_loss": [], "actor_loss": []}
        episode_returns: list[float] = []

        for global_step in range(start, config.steps):
            # -- act and store --------------------------------------------------------------------------
            if global_step < config.start_steps:
                action = rng.uniform(low, high).astype(np.float32)
            else:
                action = (policy(obs) + rng.normal(0.0, expl_std)).clip(low, high).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            replay.add(obs, action, float(reward), next_obs, bool(terminated))
            episode_actions.append(action)
            obs = next_obs
            episode_return += float(reward)

            # -- learn ----------------------------------------------------------------------------------
            if global_step >= config.start_steps:
                batch = replay.sample(config.batch_size, generator)
                noise.normal_(generator=generator)
                update = agent.update(batch, noise.to(device, non_blocking=True))
                for key in losses:
                    if key in update:
                        losses[key].append(update[key])
                if "sad_actor" in update:
                    sink.on_stats(global_step + 1, {k: v for k, v in update.items() if k.startswith("sad_")})

            # -- report ---------------------------------------------------------------------------------
            step = global_step + 1
            if step % config.eval_interval == 0:
                evaluator.submit(step, wall(), snapshot(agent.actor))
            report_evals(evaluator.ready())
            if step % PROGRESS_INTERVAL == 0 or step == config.steps:
                now = time.perf_counter()
                rate = (step - window_start) / max(now - window_time, 1e-9)
                sink.on_progress(step, rate)
                if step % STATS_INTERVAL == 0:
                    stats = {k: float(np.mean(v)) for k, v in losses.items() if v}
                    if episode_returns:
                        stats["train_return"] = float(np.mean(episode_returns))
                    stats["steps_per_sec"] = rate
                    stats.update(agent.densities())
                    sink.on_stats(step, stats)
                    losses = {k: [] for k in losses}
                    episode_returns = []
                    window_start, window_time = step, now

            # -- episode boundary: checkpoint when due or asked to stop, then reset ----------------------
            if terminated or truncated:
                episode_returns.append(episode_return)
                episode_return, episode_actions = 0.0, []
                if step < config.steps:
                    stop = sink.should_stop()
                    if stop or step - last_checkpoint >= config.checkpoint_interval:
                        save(step)
                        last_checkpoint = step
                    if stop:
                        return TrainResult(step, False, resumed_from, last_return)
                    episode_reset = env.unwrapped.np_random.bit_generator.state
                    obs, _ = env.reset()

        save(config.steps)
        return TrainResult(config.steps, True, resumed_from, last_return)
    finally:
        evaluator.close()
        env.close()


def _replay_episode(env, reset_rng: dict | None, actions: list[np.ndarray], seed: int) -> tuple[np.ndarray, float]:
    """Bring `env` to where a run saved in mid-episode stood: the same reset, then the same actions (the simulator is
    deterministic); returns the observation there and the episode's return so far."""
    if reset_rng is None:
        obs, _ = env.reset(seed=seed)
    else:
        env.unwrapped.np_random.bit_generator.state = reset_rng
        obs, _ = env.reset()
    episode_return = 0.0
    for action in actions:
        obs, reward, *_ = env.step(action)
        episode_return += float(reward)
    return obs, episode_return


def resume(run_dir: Path, sink: Sink) -> TrainResult:
    """Continue the run saved in `run_dir` (its config is read from the checkpoint) to its last step."""
    public = Path(run_dir) / ckpt.CHECKPOINT  # small, unlike resume.pt with its replay buffer; same config
    if not (Path(run_dir) / ckpt.RESUME).exists() or not public.exists():
        raise UsageError(f"{run_dir} holds no resumable checkpoint ({ckpt.RESUME} and {ckpt.CHECKPOINT})")
    saved = ckpt.load(public)
    config = RunConfig.from_dict(saved["config"])
    return train(config, Path(run_dir), sink, owner=saved.get("owner") or ckpt.owner_of(config))
