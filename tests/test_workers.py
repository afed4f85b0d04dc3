"""`rnm run-workers` for real, on SQLite and (with $RNM_TEST_PG) PostgreSQL: many workers on one database, a worker killed with SIGKILL, and Ctrl-C.

These start the installed `rnm` as subprocesses on tiny Pendulum runs; each takes some seconds (marked slow).
"""

from __future__ import annotations

import os
import signal
import time

import pandas as pd
import pytest
import torch

from rnmtd3.checkpoint import RESUME
from rnmtd3.registry import DONE, QUEUED, RUNNING, open_registry
from rnmtd3.sinks import MemorySink
from rnmtd3.td3 import NETWORKS
from rnmtd3.trainer import train

from helpers_registry import (eval_steps_by_run, expected_eval_steps, kill_quietly, pid_alive, queue_tiny,
                              start_workers, tiny_config, wait_for)

LOCKED = "database is locked"


def read_logs(*paths) -> str:
    return "\n".join(p.read_text(errors="replace") for p in paths)


def assert_complete_curves(evals, runs, steps: int) -> None:
    by_run = eval_steps_by_run(evals)
    for run_id in runs["run_id"]:
        assert by_run.get(int(run_id)) == expected_eval_steps(steps), f"run {run_id}: {by_run.get(int(run_id))}"
    assert not evals.duplicated(["run_id", "step"]).any()


@pytest.mark.slow
def test_eight_workers_drain_forty_runs_exactly_once(tmp_path, db_url):
    runs_count, jobs, steps = 40, 8, 400
    db = db_url
    queue_tiny(db, tmp_path, seeds=runs_count, steps=steps, extra=["start_steps=300"])
    start = time.perf_counter()
    proc, out, err = start_workers(db, tmp_path, jobs)
    try:
        code = proc.wait(timeout=400)
    finally:
        kill_quietly(proc)
    wall = time.perf_counter() - start
    logs = read_logs(out, err)
    lock_errors = logs.count(LOCKED)
    registry = open_registry(db, create=False)
    runs, evals = registry.runs_frame(), registry.evals_frame()
    registry.close()
    print(f"\nexactly-once: {len(runs)} runs, {jobs} workers, wall {wall:.1f}s, lock errors {lock_errors}, "
          f"worker pids {runs['worker_pid'].nunique()}, attempts {sorted(set(runs['attempts']))}")
    assert code == 0, logs
    assert lock_errors == 0, logs
    assert "Traceback" not in logs, logs
    assert len(runs) == runs_count
    assert set(runs["status"]) == {DONE}, runs[["run_id", "status", "attempts", "error"]]
    assert set(runs["attempts"]) == {1}, runs[["run_id", "attempts"]]
    assert runs["error"].isna().all(), runs["error"].dropna().tolist()
    assert set(runs["steps_done"]) == {steps}
    assert_complete_curves(evals, runs, steps)
    assert runs["worker_pid"].nunique() > 1  # the work really was shared
    for path in runs["checkpoint"]:
        assert os.path.exists(path)


@pytest.mark.slow
def test_a_killed_worker_is_taken_over_and_resumes_from_its_checkpoint(tmp_path, db_url):
    steps = 2000
    db = db_url
    queue_tiny(db, tmp_path, seeds=1, steps=steps)
    registry = open_registry(db, create=False)
    proc, out, err = start_workers(db, tmp_path, 1, log_name="first")
    second = None
    try:
        def checkpointed():
            runs = registry.runs_frame()
            running = runs[(runs["status"] == RUNNING) & (runs["steps_done"] > 0)]
            return running.iloc[0].to_dict() if len(running) else None

        held = wait_for(checkpointed, timeout=120, interval=0.05, what="the first checkpoint")
        child = int(held["worker_pid"])
        assert child != proc.pid
        os.kill(child, signal.SIGKILL)
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        proc.wait(timeout=30)
        wait_for(lambda: not pid_alive(child), timeout=30, what="the worker to die")
        at_kill = registry.runs_frame().iloc[0].to_dict()
        assert at_kill["status"] == RUNNING and at_kill["attempts"] == 1
        assert 0 < at_kill["steps_done"] < steps, "the run ended before it could be killed: make it longer"
        run_dir = os.path.dirname(at_kill["checkpoint"])
        resume_state = torch.load(os.path.join(run_dir, RESUME), weights_only=True)
        assert resume_state["step"] == at_kill["steps_done"]
        evals_before = registry.evals_frame()

        second, out2, err2 = start_workers(db, tmp_path, 1, log_name="second")

        def taken_over():
            runs = registry.runs_frame()
            row = runs.iloc[0]
            return row["status"] != RUNNING or int(row["worker_pid"]) != child

        wait_for(taken_over, timeout=120, interval=0.02, what="the takeover")
        takeover_s = time.perf_counter() - killed_at
        code = second.wait(timeout=300)
        logs = read_logs(out, err, out2, err2)
    finally:
        kill_quietly(proc)
        if second is not None:
            kill_quietly(second)
    runs, evals = registry.runs_frame(), registry.evals_frame()
    registry.close()
    final = runs.iloc[0].to_dict()
    print(f"\ntakeover: killed at step {at_kill['steps_done']} (checkpoint), new claim {takeover_s:.1f}s after "
          f"SIGKILL (includes starting `rnm run-workers`), attempts {final['attempts']}")
    assert code == 0, logs
    assert LOCKED not in logs
    assert final["status"] == DONE and final["attempts"] == 2, final
    assert final["steps_done"] == steps and pd.isna(final["error"])
    assert_complete_curves(evals, runs, steps)
    # what the killed attempt recorded is kept as it was
    merged = evals_before.merge(evals, on=["run_id", "step"], suffixes=("_before", "_after"))
    assert len(merged) == len(evals_before)
    assert (merged["return_mean_before"] == merged["return_mean_after"]).all()
    assert (merged["wall_time_before"] == merged["wall_time_after"]).all()
    # evaluations after the checkpoint carry wall times past the checkpoint's (a resume continues its clock)
    wall = evals.set_index("step")["wall_time"]
    assert wall[wall.index > at_kill["steps_done"]].min() >= float(resume_state["wall_time"]) - 1e-9
    # and the curve is the one a run that was never interrupted gives (training is deterministic)
    config = tiny_config(seed=0, steps=steps)
    reference = MemorySink()
    train(config, tmp_path / "reference", reference)
    assert [s for s, _, _ in reference.evals] == list(evals["step"])
    assert list(evals["return_mean"]) == pytest.approx([m for _, m, _ in reference.evals], rel=1e-6, abs=1e-6)
    checkpoint = torch.load(final["checkpoint"], weights_only=True)
    assert set(NETWORKS) <= set(checkpoint) and checkpoint["config"]["pattern"] == "2:4"


@pytest.mark.slow
def test_ctrl_c_hands_runs_back_and_a_later_run_finishes_them(tmp_path, db_url):
    steps, jobs = 2000, 2
    db = db_url
    queue_tiny(db, tmp_path, seeds=jobs, steps=steps)
    registry = open_registry(db, create=False)
    proc, out, err = start_workers(db, tmp_path, jobs, log_name="first")
    try:
        def mid_way():
            runs = registry.runs_frame()
            evals = registry.evals_frame()
            progressed = evals[evals["step"] >= 300].groupby("run_id").size()
            return (runs["status"] == RUNNING).all() and len(progressed) == jobs

        wait_for(mid_way, timeout=120, interval=0.05, what="both runs to be mid-way")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the whole foreground group
        code = proc.wait(timeout=120)
    finally:
        kill_quietly(proc)
    logs = read_logs(out, err)
    runs = registry.runs_frame()
    assert code == 0, logs
    assert "Traceback" not in logs, logs
    assert LOCKED not in logs
    assert not (runs["status"] == RUNNING).any(), runs[["run_id", "status"]]
    assert set(runs["status"]) == {QUEUED}, runs[["run_id", "status", "error"]]
    assert set(runs["attempts"]) == {0}
    assert runs["worker_pid"].isna().all()
    assert ((runs["steps_done"] > 0) & (runs["steps_done"] < steps)).all(), runs[["run_id", "steps_done"]]
    for _, run in runs.iterrows():
        checkpoint = torch.load(run["checkpoint"], weights_only=True)
        assert set(NETWORKS) <= set(checkpoint) and "config" in checkpoint
        resume_state = torch.load(os.path.join(os.path.dirname(run["checkpoint"]), RESUME), weights_only=True)
        assert resume_state["step"] == run["steps_done"] == checkpoint["step"]
    evals_before = registry.evals_frame()
    stopped_at = dict(zip(runs["run_id"], runs["steps_done"]))

    proc2, out2, err2 = start_workers(db, tmp_path, jobs, log_name="second")
    try:
        code2 = proc2.wait(timeout=300)
    finally:
        kill_quietly(proc2)
    logs2 = read_logs(out2, err2)
    runs, evals = registry.runs_frame(), registry.evals_frame()
    registry.close()
    print(f"\nctrl-c: stopped at steps {sorted(stopped_at.values())}, then finished; attempts {list(runs['attempts'])}")
    assert code2 == 0, logs2
    assert set(runs["status"]) == {DONE}, runs[["run_id", "status", "error"]]
    assert set(runs["attempts"]) == {1}
    assert set(runs["steps_done"]) == {steps}
    assert_complete_curves(evals, runs, steps)
    merged = evals_before.merge(evals, on=["run_id", "step"], suffixes=("_before", "_after"))
    assert len(merged) == len(evals_before)
    assert (merged["return_mean_before"] == merged["return_mean_after"]).all()
    # the resumed runs continued the interrupted ones: their curves are those of uninterrupted runs
    seeds = dict(zip(runs["run_id"], runs["seed"]))
    for run_id, group in evals.groupby("run_id"):
        seed = int(seeds[run_id])
        reference = MemorySink()
        train(tiny_config(seed=seed, steps=steps), tmp_path / f"reference-{seed}", reference)
        assert list(group["return_mean"]) == pytest.approx([m for _, m, _ in reference.evals], rel=1e-6, abs=1e-6)
