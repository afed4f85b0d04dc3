"""Evaluations off the step loop: the same curve wherever they run, none lost to a checkpoint, a kill or a dead helper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from rnmtd3.config import RunConfig
from rnmtd3.evaluator import Evaluator, snapshot
from rnmtd3.networks import Actor
from rnmtd3.patterns import Pattern
from rnmtd3.sinks import MemorySink
from rnmtd3.trainer import train

from helpers_registry import pid_alive, wait_for

RUN = {"steps": 3000, "start_steps": 500, "eval_interval": 500, "eval_episodes": 2, "checkpoint_interval": 1000,
       "hidden": (32, 32), "mask_interval": 200, "seed": 3}


def hopper(**changes) -> RunConfig:
    return RunConfig(env="Hopper-v5", pattern=Pattern.parse("2:4"), **{**RUN, **changes})


def test_background_evaluation_gives_the_inline_curve_and_checkpoint(tmp_path):
    cfg = hopper()
    inline, background = MemorySink(), MemorySink()
    train(cfg, tmp_path / "inline", inline, resume=False, background_eval=False)
    result = train(cfg, tmp_path / "background", background, resume=False, background_eval=True)
    assert [step for step, _, _ in background.evals] == list(range(0, 3001, 500))
    assert background.evals == inline.evals
    assert result.last_return == inline.evals[-1][1]
    a, b = (torch.load(tmp_path / f / "checkpoint.pt", weights_only=True) for f in ("inline", "background"))
    assert all(torch.equal(a["actor"][k], b["actor"][k]) for k in a["actor"])


def test_background_evaluations_are_all_in_before_a_checkpoint(tmp_path):
    cfg = hopper(precision="bf16")
    straight = MemorySink()
    train(cfg, tmp_path / "straight", straight, resume=False, background_eval=False)
    first = MemorySink(stop_after_checkpoint=True)
    stopped = train(cfg, tmp_path / "run", first, resume=False, background_eval=True)
    assert not stopped.finished
    # every evaluation up to the checkpoint was reported before it, so the resumed run need not redo any
    assert [step for step, _, _ in first.evals] == list(range(0, stopped.steps_done + 1, 500))
    second = MemorySink()
    train(cfg, tmp_path / "run", second, resume=True, background_eval=True)
    assert second.evals == straight.evals  # the resumed run reports its saved curve again, then the rest


def actor_snapshots(count: int) -> list[dict[str, np.ndarray]]:
    torch.manual_seed(0)
    return [snapshot(Actor(11, 3, (32, 32), -torch.ones(3), torch.ones(3))) for _ in range(count)]


def test_a_dead_helper_costs_no_evaluation():
    cfg = hopper()
    low, high = -np.ones(3, np.float32), np.ones(3, np.float32)
    weights = actor_snapshots(5)
    inline = Evaluator(cfg, 11, 3, low, high, background=False)
    helper = Evaluator(cfg, 11, 3, low, high, background=True)
    try:
        for step, w in enumerate(weights):
            inline.submit(step, 0.0, w)
        expected = [(r.step, r.returns.tolist()) for r in inline.drain()]
        helper.submit(0, 0.0, weights[0])
        helper.submit(1, 0.0, weights[1])
        os.kill(helper._process.pid, signal.SIGKILL)
        for step in range(2, 5):
            helper.submit(step, 0.0, weights[step])
        got = [(r.step, r.returns.tolist()) for r in helper.drain()]
        assert not helper.background  # it fell back to evaluating inline
    finally:
        inline.close()
        helper.close()
    assert got == expected


@pytest.mark.slow
def test_the_helper_exits_when_its_trainer_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from rnmtd3.config import RunConfig
        from rnmtd3.evaluator import Evaluator
        from rnmtd3.patterns import Pattern
        cfg = RunConfig(env="Pendulum-v1", pattern=Pattern.parse("dense"), seed=0)
        ev = Evaluator(cfg, 3, 1, -2 * np.ones(1, np.float32), 2 * np.ones(1, np.float32), background=True)
        print(ev._process.pid, flush=True)
        time.sleep(600)
    """)
    trainer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        helper_pid = int(trainer.stdout.readline())
        assert pid_alive(helper_pid)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        wait_for(lambda: not pid_alive(helper_pid), timeout=15, what="the orphaned helper to exit")
    finally:
        if trainer.poll() is None:
            trainer.kill()
