"""`rnm run-workers --ray local`: Ray places the workers, the registry keeps exactly-once and takeover."""

from __future__ import annotations

import os
import signal

import pytest

import rnmtd3.resources as resources
from rnmtd3.errors import UsageError
from rnmtd3.registry import DONE, RUNNING, open_registry
from rnmtd3.sweep import make_config

from helpers_registry import eval_steps_by_run, expected_eval_steps, kill_quietly, queue_tiny, start_workers, wait_for

pytest.importorskip("ray")


@pytest.mark.slow
def test_a_local_ray_cluster_drains_the_queue_and_takes_over_a_killed_worker(tmp_path, db_url):
    steps, runs_count = 1200, 3
    queue_tiny(db_url, tmp_path, seeds=runs_count, steps=steps)
    registry = open_registry(db_url, create=False)
    proc, out, err = start_workers(db_url, tmp_path, 2, log_name="ray", extra=["--ray", "local"])
    try:
        def checkpointed():
            runs = registry.runs_frame()
            held = runs[(runs["status"] == RUNNING) & (runs["steps_done"] > 0)]
            return held.iloc[0].to_dict() if len(held) else None

        victim = wait_for(checkpointed, timeout=180, interval=0.05, what="a checkpointed run on a Ray worker")
        os.kill(int(victim["worker_pid"]), signal.SIGKILL)
        code = proc.wait(timeout=400)
    finally:
        kill_quietly(proc)
    logs = out.read_text() + err.read_text()
    runs, evals = registry.runs_frame(), registry.evals_frame()
    registry.close()
    assert code == 0, logs
    assert set(runs["status"]) == {DONE}, runs[["run_id", "status", "attempts", "error"]]
    attempts = dict(zip(runs["run_id"], runs["attempts"]))
    assert attempts[victim["run_id"]] == 2
    assert sorted(attempts.values()) == [1] * (runs_count - 1) + [2]
    by_run = eval_steps_by_run(evals)
    assert all(by_run[int(r)] == expected_eval_steps(steps) for r in runs["run_id"])


@pytest.mark.slow
def test_a_ray_plan_uses_the_cluster_memory_that_ray_reports(tmp_path, monkeypatch):
    import ray

    from rnmtd3.ray_workers import connect

    registry = open_registry(tmp_path / "ray-plan.db")
    registry.enqueue([make_config("Ant", "2:4", 0, {})])
    monkeypatch.setattr(resources, "available_memory", lambda: 2**20)  # the driver alone could hold no worker
    try:
        cluster = connect("local", 2)
        assert cluster.total == cluster.largest == int(ray.cluster_resources()["memory"])
        need = resources.worker_memory(registry)
        assert need < cluster.total  # else this machine is too small for the test's point
        resources.check_memory(registry, 1, cluster=cluster)
        jobs = cluster.total // need + 1
        with pytest.raises(UsageError, match=rf"{jobs} workers need .* to tasks on the Ray cluster; at most {jobs - 1} "):
            resources.check_memory(registry, jobs, cluster=cluster)
        with pytest.raises(UsageError, match="at most 0 worker"):
            resources.check_memory(registry, 1)  # the same plan on this machine's (patched) memory
    finally:
        ray.shutdown()
        registry.close()
