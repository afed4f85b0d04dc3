"""`rnm run-workers --ray local`: Ray places the workers, the registry keeps exactly-once and takeover."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import rnmtd3.resources as resources
from rnmtd3.errors import UsageError
from rnmtd3.ray_workers import RayPool
from rnmtd3.registry import DONE, RUNNING, open_registry
from rnmtd3.sweep import make_config

from helpers_registry import (assert_usage_error, cli_env, eval_steps_by_run, expected_eval_steps, kill_quietly,
                              queue_tiny, rnm, start_workers, wait_for)

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
    assert code == 1, logs  # every run done, but a worker died: the caller hears of it
    assert len(re.findall(r"^Ray worker [01] died: WorkerCrashedError: \S", logs, re.MULTILINE)) == 1, logs
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
        [need] = resources.run_needs(registry)
        assert need < cluster.total  # else this machine is too small for the test's point
        resources.check_memory(registry, 1, cluster=cluster)
        jobs = cluster.total // need + 1
        registry.enqueue([make_config("Ant", "2:4", seed, {}) for seed in range(1, jobs)])  # a run for each worker
        with pytest.raises(UsageError, match=rf"{jobs} workers need .* to tasks on the Ray cluster; at most {jobs - 1} "):
            resources.check_memory(registry, jobs, cluster=cluster)
        with pytest.raises(UsageError, match="at most 0 worker"):
            resources.check_memory(registry, 1)  # the same plan on this machine's (patched) memory
    finally:
        ray.shutdown()
        registry.close()


def test_an_address_that_does_not_answer_is_refused_at_once(tmp_path):
    """Ray itself retries such an address for minutes, printing raw gRPC errors."""
    queue_tiny(tmp_path / "rnm.db", tmp_path)
    started = time.monotonic()
    result = rnm(["run-workers", "--ray", "127.0.0.1:1", "-j", "2", "--db", tmp_path / "rnm.db"], tmp_path)
    assert_usage_error(result, "cannot reach a Ray cluster at --ray 127.0.0.1:1")
    assert time.monotonic() - started < 60


def test_only_host_port_addresses_are_probed():
    from rnmtd3.ray_workers import _check_reachable

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        _check_reachable(f"127.0.0.1:{port}")
        _check_reachable(f"ray://127.0.0.1:{port}")
    _check_reachable("auto")  # Ray's to resolve
    for address in (f"127.0.0.1:{port}", "127.0.0.1:99999", "ray://[::1]:1"):
        with pytest.raises(UsageError, match="cannot reach a Ray cluster"):
            _check_reachable(address)


def test_a_task_that_dies_is_told_apart_from_one_cancelled():
    import ray

    class FakeRay:
        exceptions = ray.exceptions

        @staticmethod
        def get(ref):
            if isinstance(ref, Exception):
                raise ref
            return ref

    pool = RayPool.__new__(RayPool)
    pool.ray, pool.refs = FakeRay, [2, ray.exceptions.WorkerCrashedError(), ray.exceptions.TaskCancelledError(), 1,
                                    ray.exceptions.RayTaskError("work", "Traceback ...", ValueError("no\nmore"))]
    finished, dead = pool.outcome()
    assert finished == 3
    assert dead[0].startswith("Ray worker 1 died: WorkerCrashedError: The worker died unexpectedly")
    assert dead[1:] == ["Ray worker 4 died: ValueError: no"]


# Listening sockets of this process and its descendants (the Ray servers and workers it started), as `ss` has them.
LISTENERS_PROBE = """
import os, re, subprocess
from rnmtd3.ray_workers import connect
connect("local", 1)
import ray
print("node", ray.nodes()[0]["NodeManagerAddress"])
parent = {}
for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{entry}/stat") as stat:
            parent[int(entry)] = int(stat.read().rpartition(")")[2].split()[1])
    except OSError:
        pass
ours = {os.getpid()}
while more := {pid for pid, ppid in parent.items() if ppid in ours} - ours:
    ours |= more
for line in subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True).stdout.splitlines():
    if {int(pid) for pid in re.findall(r"pid=(\\d+)", line)} & ours:
        print("listen", line.split()[4])
ray.shutdown()
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss(8) to list listening sockets")
def test_a_local_ray_cluster_listens_on_loopback_only():
    """MISSION.md section 4: nothing listens on a network port. Ray's servers bind to the node's address."""
    done = subprocess.run([sys.executable, "-c", LISTENERS_PROBE], capture_output=True, text=True, env=cli_env(),
                          timeout=180)
    lines = done.stdout.splitlines()
    assert "node 127.0.0.1" in lines, done.stdout + done.stderr
    addresses = [line.split()[1] for line in lines if line.startswith("listen ")]
    assert addresses, done.stdout + done.stderr  # Ray's servers were seen, so the check below means something
    assert all(re.match(r"(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+$", a) for a in addresses), addresses
