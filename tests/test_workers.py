"""`rnm run-workers` for real, on SQLite and (with $RNM_TEST_PG) PostgreSQL: many workers on one database, a worker
killed with SIGKILL, Ctrl-C, a run lost while it trains, a restart from step 0, and a run that cannot run here.

Most start the installed `rnm` as subprocesses on tiny Pendulum runs; each takes some seconds (marked slow).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

import pandas as pd
import pytest
import torch

from rnmtd3.checkpoint import CHECKPOINT, RESUME
from rnmtd3.registry import CANCELLED, DONE, FAILED, QUEUED, RUNNING, open_registry
from rnmtd3.sinks import MemorySink
from rnmtd3.td3 import NETWORKS
from rnmtd3.trainer import train
from rnmtd3.workers import LeaseLost, RegistrySink

from helpers_registry import (describe, eval_steps_by_run, expected_eval_steps, expire_lease, kill_quietly,
                              pid_alive, queue_tiny, rnm, run_row, snapshot, start_workers, tiny_config, wait_for)

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
            # the checkpoint column, not steps_done: heartbeats report the step reached before any checkpoint
            running = runs[(runs["status"] == RUNNING) & runs["checkpoint"].notna()]
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
        checkpoint_step = int(resume_state["step"])  # a heartbeat may have reported a later step since
        assert 0 < checkpoint_step <= at_kill["steps_done"]
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
    print(f"\ntakeover: killed after the checkpoint at step {checkpoint_step}, new claim {takeover_s:.1f}s after "
          f"SIGKILL (includes starting `rnm run-workers`), attempts {final['attempts']}")
    assert code == 0, logs
    assert LOCKED not in logs
    assert final["status"] == DONE and final["attempts"] == 2, final
    assert final["steps_done"] == steps and pd.isna(final["error"])
    assert_complete_curves(evals, runs, steps)
    # what the killed attempt recorded up to its checkpoint is kept as it was (after it, the resumed run recorded
    # its own evaluations, past the checkpoint's wall time: checked below)
    kept = evals_before[evals_before["step"] <= checkpoint_step]
    merged = kept.merge(evals, on=["run_id", "step"], suffixes=("_before", "_after"))
    assert len(merged) == len(kept) > 0
    assert (merged["return_mean_before"] == merged["return_mean_after"]).all()
    assert (merged["wall_time_before"] == merged["wall_time_after"]).all()
    # evaluations after the checkpoint carry wall times past the checkpoint's (a resume continues its clock)
    wall = evals.set_index("step")["wall_time"]
    assert wall[wall.index > checkpoint_step].min() >= float(resume_state["wall_time"]) - 1e-9
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
    assert code == 128 + signal.SIGINT, logs  # stopped, not drained: as a shell reports Ctrl-C
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


# -- a run lost while it trains ----------------------------------------------------------------------------------

class LosesItsRun:
    """A worker's sink whose run is lost (`lose`) when the trainer first asks whether to stop: at the first episode
    boundary, where a checkpoint is due, so the trainer's next move would be to write the run's files."""

    def __init__(self, sink: RegistrySink, lose: Callable[[], None]):
        self._sink, self._lose, self.lost = sink, lose, False

    def __getattr__(self, name: str):
        return getattr(self._sink, name)

    def should_stop(self) -> bool:
        if not self.lost:
            self.lost = True
            self._lose()
        return self._sink.should_stop()


@pytest.mark.parametrize("how", ["taken over", "cancelled"])
def test_a_worker_that_loses_its_run_mid_training_stops_and_writes_nothing_more(tmp_path, db_url, how):
    registry = open_registry(db_url)
    config = tiny_config(steps=600)
    registry.enqueue([config])
    old = registry.claim(pid=111)
    run_dir = tmp_path / "run"  # a run has one folder: a worker that takes it over works in the same one
    at_loss: dict = {}

    def lose() -> None:
        if how == "cancelled":
            assert registry.cancel([old.run_id], include_running=True) == 1
        else:
            expire_lease(registry, old.run_id)
            new = registry.claim(pid=222)
            assert new is not None and new.run_id == old.run_id
            for name in (CHECKPOINT, RESUME):  # the new holder has checkpointed
                (run_dir / name).write_bytes(f"{name} of the new holder".encode())
            assert registry.record_checkpoint(new, 200, str(run_dir / CHECKPOINT))
        at_loss.update(files=snapshot(run_dir), run=run_row(registry, old.run_id), evals=registry.evals_frame(),
                       stats=registry.stats_frame())

    sink = LosesItsRun(RegistrySink(registry, old, lambda update: None, 0, threading.Event(), lease_s=60), lose)
    try:
        with pytest.raises(LeaseLost):
            train(config, run_dir, sink)
        assert sink.lost and list(at_loss["evals"]["step"]) == [0, 100, 200]
        assert run_row(registry, old.run_id) == at_loss["run"]
        pd.testing.assert_frame_equal(registry.evals_frame(), at_loss["evals"])
        pd.testing.assert_frame_equal(registry.stats_frame(), at_loss["stats"])
        files = snapshot(run_dir)
        written = sorted(name for name in {*files, *at_loss["files"]} if files.get(name) != at_loss["files"].get(name))
        assert written == [], f"written after the run was {how}"
    finally:
        sink.close()
        registry.close()


@pytest.mark.slow
def test_a_run_cancelled_while_it_trains_stops_its_worker_and_later_resumes_to_one_curve(tmp_path, db_url):
    steps = 1000
    queue_tiny(db_url, tmp_path, seeds=1, steps=steps)
    registry = open_registry(db_url, create=False)
    (run_id,) = registry.runs_frame()["run_id"]
    proc, out, err = start_workers(db_url, tmp_path, 1, log_name="first")
    second = None
    try:
        wait_for(lambda: (registry.evals_frame()["step"] >= 300).any(), timeout=120, what="the run to be mid-way")
        assert registry.cancel([run_id], include_running=True) == 1
        cancelled_at = time.perf_counter()
        at_cancel = run_row(registry, run_id), registry.evals_frame(), registry.stats_frame()
        code = proc.wait(timeout=120)
        stop_s = time.perf_counter() - cancelled_at
        logs = read_logs(out, err)
        assert code == 0, logs
        assert "Traceback" not in logs and LOCKED not in logs, logs
        assert run_row(registry, run_id) == at_cancel[0]
        pd.testing.assert_frame_equal(registry.evals_frame(), at_cancel[1])
        pd.testing.assert_frame_equal(registry.stats_frame(), at_cancel[2])
        assert at_cancel[0]["status"] == CANCELLED and 0 < at_cancel[0]["steps_done"] < steps

        assert registry.retry_failed([run_id]) == 1
        second, out2, err2 = start_workers(db_url, tmp_path, 1, log_name="second")
        code2 = second.wait(timeout=300)
        assert code2 == 0, read_logs(out2, err2)
    finally:
        kill_quietly(proc)
        if second is not None:
            kill_quietly(second)
    runs, evals = registry.runs_frame(), registry.evals_frame()
    registry.close()
    print(f"\ncancelled at step {at_cancel[0]['steps_done']}: the worker exited {stop_s:.1f}s later")
    assert runs.loc[0, "status"] == DONE and runs.loc[0, "steps_done"] == steps
    assert_complete_curves(evals, runs, steps)
    reference = MemorySink()
    train(tiny_config(seed=0, steps=steps), tmp_path / "reference", reference)
    assert list(evals["return_mean"]) == pytest.approx([m for _, m, _ in reference.evals], rel=1e-6, abs=1e-6)


# -- a restart is a restart; a run that cannot run here fails at once --------------------------------------------

EARLIER = 1234.5  # a return no Pendulum run can reach (its rewards are never positive)


@pytest.mark.slow
def test_a_run_restarted_from_step_0_keeps_no_point_of_the_earlier_attempt(tmp_path, db_url):
    steps = 400
    queue_tiny(db_url, tmp_path, seeds=1, steps=steps)
    registry = open_registry(db_url, create=False)
    first = registry.claim(pid=111)
    # an earlier attempt reached step 300 with a checkpoint at 200, in a folder that is gone now
    for step in (0, 100, 200, 300):
        assert registry.record_eval(first, step, EARLIER, 0.0, float(step))
    assert registry.record_stats(first, 200, {"critic_loss": EARLIER})
    assert registry.record_checkpoint(first, 200, str(tmp_path / "gone" / CHECKPOINT))
    assert registry.fail(first, "RuntimeError: the earlier attempt's failure")
    result = rnm(["run-workers", "--db", db_url], tmp_path)
    runs, evals, stats = registry.runs_frame(), registry.evals_frame(), registry.stats_frame()
    registry.close()
    assert result.returncode == 0, describe(result)
    run = runs.iloc[0]
    assert run["status"] == DONE and run["attempts"] == 2, run
    assert list(evals["step"]) == expected_eval_steps(steps)
    assert EARLIER not in set(evals["return_mean"]) and EARLIER not in set(stats["value"])
    assert run["last_return"] == evals["return_mean"].iloc[-1]
    assert "restarted from step 0" in run["notes"]


@pytest.mark.slow
def test_a_run_that_cannot_run_on_this_machine_fails_in_one_attempt_with_its_reason(tmp_path, db_url):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: device=cuda runs")
    queue_tiny(db_url, tmp_path, seeds=1, extra=["device=cuda"], more=["--max-attempts", "3"])
    result = rnm(["run-workers", "--db", db_url], tmp_path)
    registry = open_registry(db_url, create=False)
    run = registry.runs_frame().iloc[0]
    registry.close()
    assert result.returncode == 1, describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    assert run["status"] == FAILED and run["attempts"] == 1, run
    assert len(run["error"].splitlines()) == 1 and "device=cuda" in run["error"], run["error"]
