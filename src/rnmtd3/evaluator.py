"""Evaluations kept off the step loop's critical path.

An evaluation (10 noise-free episodes with a batch-1 actor) costs a few percent of a run when the step loop waits
for it. Where a core is spare, a helper process evaluates snapshots of the actor while training goes on. Results
come back in step order; the trainer waits for pending ones only before a checkpoint, so a resumed run never
misses an evaluation. Both placements evaluate the same snapshot with the same code on the run's device, so the
curve does not depend on where it was computed.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .config import RunConfig
from .envs import evaluate, make_env
from .networks import Actor

MAX_PENDING = 2  # snapshots in flight before submit() waits for the oldest: a slow helper never piles up work
PARENT_CHECK_S = 1.0


@dataclass(frozen=True)
class EvalResult:
    step: int
    wall_time: float
    returns: np.ndarray


def greedy_policy(actor: Actor, config: RunConfig) -> Callable[[np.ndarray], np.ndarray]:
    """The noise-free action of `actor` for one observation, computed as training computes it (autocast too)."""
    device = torch.device(config.device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if config.precision == "bf16"
                else contextlib.nullcontext())
    obs_buffer = torch.empty((1, actor.net[0].in_features), dtype=torch.float32, device=device)

    @torch.no_grad()
    def policy(observation: np.ndarray) -> np.ndarray:
        obs_buffer.copy_(torch.from_numpy(np.asarray(observation, dtype=np.float32)).reshape(1, -1))
        with autocast:
            return actor(obs_buffer).float()[0].cpu().numpy()

    return policy


def snapshot(actor: Actor) -> dict[str, np.ndarray]:
    """The actor's weights as numpy arrays: they pickle by value (torch tensors would go through shared memory)."""
    return {key: value.detach().cpu().numpy().copy() for key, value in actor.state_dict().items()}


class _Judge:
    """An actor of the run's shape and an evaluation env: what both placements evaluate a snapshot with."""

    def __init__(self, config: RunConfig, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray):
        self.config = config
        self.actor = Actor(obs_dim, act_dim, config.hidden, torch.as_tensor(low), torch.as_tensor(high))
        self.actor.to(config.device).requires_grad_(False)
        self.policy = greedy_policy(self.actor, config)
        self.env = make_env(config.env)

    def __call__(self, weights: dict[str, np.ndarray]) -> np.ndarray:
        self.actor.load_state_dict({key: torch.from_numpy(value) for key, value in weights.items()})
        return evaluate(self.env, self.policy, self.config.eval_episodes, self.config.seed + 100)

    def close(self) -> None:
        self.env.close()


def _serve(jobs: mp.Queue, results: mp.Queue, config: dict, obs_dim: int, act_dim: int, low: np.ndarray,
           high: np.ndarray, parent: int) -> None:
    """The helper process: evaluate snapshots until told to stop, or until its trainer is gone (kill -9)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the trainer's to handle
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the trainer does: the same numerics as an inline evaluation
    judge = _Judge(RunConfig.from_dict(config), obs_dim, act_dim, low, high)
    try:
        while True:
            try:
                job = jobs.get(timeout=PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != parent:
                    return
                continue
            if job is None:
                return
            step, wall_time, weights = job
            results.put((step, wall_time, judge(weights)))
    finally:
        judge.close()


class Evaluator:
    """Evaluates actor snapshots inline or in a helper process; `ready()` and `drain()` give results in step order.

    If the helper dies, the snapshots it held are evaluated inline and later ones stay inline: a run never loses
    an evaluation to its helper.
    """

    def __init__(self, config: RunConfig, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray,
                 background: bool):
        self._args = (config, obs_dim, act_dim, low, high)
        self._judge: _Judge | None = None
        self._pending: deque[tuple[int, float, dict[str, np.ndarray]]] = deque()
        self._done: list[EvalResult] = []
        self._process = None
        if background:
            ctx = mp.get_context("spawn")
            # Queues, not a bare pipe: put() hands the snapshot to a feeder thread, so the step loop never
            # blocks on a helper that is still starting up or busy with the previous evaluation.
            self._jobs, self._results = ctx.Queue(), ctx.Queue()
            self._process = ctx.Process(target=_serve, name="rnm-evaluator", daemon=True,
                                        args=(self._jobs, self._results, config.to_dict(), obs_dim, act_dim,
                                              low, high, os.getpid()))
            self._process.start()

    @property
    def background(self) -> bool:
        return self._process is not None

    def submit(self, step: int, wall_time: float, weights: dict[str, np.ndarray]) -> None:
        while self.background and len(self._pending) >= MAX_PENDING:
            self._receive(block=True)
        if not self.background:  # inline, or the helper died while we waited
            self._done.append(EvalResult(step, wall_time, self._inline()(weights)))
            return
        self._pending.append((step, wall_time, weights))
        self._jobs.put((step, wall_time, weights))

    def ready(self) -> list[EvalResult]:
        """Results finished so far, without waiting."""
        while self.background and self._pending and self._receive(block=False):
            pass
        return self._take()

    def drain(self) -> list[EvalResult]:
        """Every submitted evaluation's result, waiting for those still running."""
        while self.background and self._pending:
            self._receive(block=True)
        return self._take()

    def close(self) -> None:
        if self._process is not None:
            self._jobs.put(None)
            self._process.join(timeout=1)  # it holds nothing worth keeping: a stopping run need not wait for it
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._close_queues()
        if self._judge is not None:
            self._judge.close()
            self._judge = None

    # -- internals ----------------------------------------------------------------------------------
    def _receive(self, block: bool) -> bool:
        """Move one result from the helper to the finished list; False when none is there (non-blocking)."""
        while True:
            try:
                step, wall_time, returns = self._results.get(timeout=PARENT_CHECK_S) if block \
                    else self._results.get_nowait()
                break
            except queue.Empty:
                if not self._process.is_alive():
                    self._fall_back()
                    return True
                if not block:
                    return False
        expected = self._pending.popleft()
        assert expected[0] == step, "the helper answers in submission order"
        self._done.append(EvalResult(step, wall_time, returns))
        return True

    def _fall_back(self) -> None:
        """The helper is gone: evaluate what it held here, and everything after it too."""
        pending, self._pending = list(self._pending), deque()
        self._process.join()
        self._process = None
        self._close_queues()
        for step, wall_time, weights in pending:
            self._done.append(EvalResult(step, wall_time, self._inline()(weights)))

    def _close_queues(self) -> None:
        for q in (self._jobs, self._results):
            q.cancel_join_thread()  # never block on a feeder whose reader is gone
            q.close()

    def _inline(self) -> _Judge:
        if self._judge is None:
            self._judge = _Judge(*self._args)
        return self._judge

    def _take(self) -> list[EvalResult]:
        done, self._done = self._done, []
        return done
