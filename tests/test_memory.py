"""Memory planning: a replay buffer's size is known before a run starts, and `run-workers` refuses a plan that
cannot fit, saying how many workers would."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

import rnmtd3.resources as resources
from rnmtd3.errors import UsageError
from rnmtd3.registry import QUEUED, open_registry
from rnmtd3.replay import ReplayBuffer
from rnmtd3.resources import replay_bytes
from rnmtd3.sweep import make_config

from helpers_registry import assert_usage_error, rnm, rnm_many

GIB = 2**30


def test_replay_bytes_is_what_the_buffer_allocates():
    buffer = ReplayBuffer(348, 17, 1000)
    allocated = sum(t.nbytes for t in (buffer.obs, buffer.next_obs, buffer.actions, buffer.rewards,
                                       buffer.terminated))
    assert replay_bytes(348, 17, 1000) == allocated
    # Humanoid-v5 at 1e6 transitions: about 2.9 GB in float32
    assert 2.8e9 < replay_bytes(348, 17, 10**6) < 2.9e9


@pytest.fixture
def humanoid_db(tmp_path):
    db = tmp_path / "plan.db"
    registry = open_registry(str(db))
    registry.enqueue([make_config("Humanoid-v5", "2:4", 0, {}), make_config("Hopper-v5", "2:4", 0, {})])
    yield registry
    registry.close()


HUMANOID = resources.run_memory(make_config("Humanoid-v5", "2:4", 0, {}), 348, 17)
HOPPER = resources.run_memory(make_config("Hopper-v5", "2:4", 0, {}), 11, 3)


def more_humanoids(registry, count: int) -> None:
    registry.enqueue([make_config("Humanoid-v5", "2:4", seed, {}) for seed in range(1, count + 1)])


def test_the_plan_knows_each_claimable_runs_memory(humanoid_db):
    assert sorted(resources.run_needs(humanoid_db)) == sorted([HUMANOID, HOPPER])


def test_a_worker_with_an_evaluation_helper_needs_one_process_more(humanoid_db, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 2 * HUMANOID)
    monkeypatch.setattr(resources, "spare_cores", lambda jobs, threads: False)
    resources.check_memory(humanoid_db, 2)
    monkeypatch.setattr(resources, "spare_cores", lambda jobs, threads: True)
    with pytest.raises(UsageError, match=r"at most 1 worker\(s\) fit"):
        resources.check_memory(humanoid_db, 2)


def test_a_run_that_cannot_be_read_does_not_stop_the_plan(tmp_path, humanoid_db):
    """Its claim fails it with the reason; the plan is made for the runs that can run."""
    with closing(sqlite3.connect(tmp_path / "plan.db")) as conn, conn:
        conn.execute("""UPDATE runs SET config = '{"env": "Humanoid-v5", "pattern": "2:4", "seed": 0, "bogus": 1}'
                        WHERE env = 'Humanoid-v5'""")
    assert resources.run_needs(humanoid_db) == [HOPPER]


def test_a_run_holds_its_replay_buffer_twice_and_its_networks():
    """A checkpoint copies the filled replay buffer (ReplayBuffer.state), so a run's peak holds it twice."""
    config = make_config("Humanoid-v5", "2:4", 0, {})
    params = resources.network_parameters(348, 17, (256, 256))
    assert params == (348 * 256 + 256 + 256 * 256 + 256 + 256 * 17 + 17) + 2 * (365 * 256 + 256 + 256 * 256 + 256
                                                                                 + 256 + 1)
    assert resources.run_memory(config, 348, 17) == (
        2 * replay_bytes(348, 17, 10**6) + resources.BYTES_PER_PARAMETER * params
        + resources.BYTES_PER_ACTIVATION * 256 * 512 + resources.PROCESS_OVERHEAD)
    short = config.replace(steps=1000, batch_size=256)  # the buffer never holds more than the run's steps
    assert resources.run_memory(short, 348, 17) - resources.run_memory(config, 348, 17) == \
        2 * (replay_bytes(348, 17, 1000) - replay_bytes(348, 17, 10**6))


def test_a_plan_that_does_not_fit_is_refused_with_how_many_would(humanoid_db, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 20 * GIB)
    monkeypatch.setattr(resources, "spare_cores", lambda jobs, threads: False)
    more_humanoids(humanoid_db, 4)
    resources.check_memory(humanoid_db, 3)  # 3 x 6.2 GiB fits in 20
    with pytest.raises(UsageError, match=r"at most 3 worker\(s\) fit"):
        resources.check_memory(humanoid_db, 4)


def test_a_ray_plan_is_checked_against_the_cluster_not_this_machine(humanoid_db, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: GIB)  # the driver could not hold one worker
    monkeypatch.setattr(resources, "spare_cores", lambda jobs, threads: True)  # Ray tasks have no helper anyway
    more_humanoids(humanoid_db, 63)
    need = HUMANOID
    four_nodes = resources.Memory(4 * 16 * GIB, 16 * GIB, "available to tasks on the Ray cluster")
    resources.check_memory(humanoid_db, 8, cluster=four_nodes)
    with pytest.raises(UsageError, match=rf"at most {4 * 16 * GIB // need} worker\(s\) fit"):
        resources.check_memory(humanoid_db, 64, cluster=four_nodes)
    many_small = resources.Memory(64 * 4 * GIB, 4 * GIB, "available to tasks on the Ray cluster")
    with pytest.raises(UsageError, match=r"one worker needs .* the largest node has 4.0 GiB available to tasks"):
        resources.check_memory(humanoid_db, 1, cluster=many_small)
    with pytest.raises(UsageError, match=r"GiB is available; at most 0 worker"):
        resources.check_memory(humanoid_db, 1)


def test_only_as_many_workers_as_claimable_runs_are_planned(tmp_path, monkeypatch):
    """One queued Ant run: whatever -j says, one worker holds it and the others find nothing to claim."""
    monkeypatch.setattr(resources, "available_memory", lambda: 4 * GIB)
    monkeypatch.setattr(resources, "spare_cores", lambda jobs, threads: False)
    with open_registry(tmp_path / "ant.db") as registry:
        registry.enqueue([make_config("Ant", "2:4", 0, {})])
        resources.check_memory(registry, 40)
        registry.enqueue([make_config("Ant", "2:4", seed, {}) for seed in (1, 2)])
        with pytest.raises(UsageError, match=r"^3 of the 40 workers \(one per claimable run\) need .* at most 1 "):
            resources.check_memory(registry, 40)


def test_a_run_too_large_for_this_machine_alone_does_not_stop_the_plan(humanoid_db, monkeypatch):
    """A run that an older rnm queued without check_runs_fit: its claim fails it, the plan is for the others."""
    monkeypatch.setattr(resources, "total_memory", lambda: 16 * GIB)
    monkeypatch.setattr(resources, "available_memory", lambda: 8 * GIB)
    monkeypatch.setattr(resources, "spare_cores", lambda jobs, threads: False)
    huge = make_config("Ant", "2:4", 0, {"steps": 10**9, "buffer_size": 10**9})
    with pytest.raises(UsageError, match="this machine has 16.0 GiB"):
        resources.check_runs_fit([huge])
    humanoid_db.enqueue([huge])
    assert sorted(resources.run_needs(humanoid_db, fits=16 * GIB)) == sorted([HUMANOID, HOPPER])
    resources.check_memory(humanoid_db, 1)


def test_the_cluster_memory_is_the_sum_over_live_nodes():
    from rnmtd3.ray_workers import cluster_memory

    class FakeRay:
        @staticmethod
        def nodes():
            return [{"Alive": True, "Resources": {"memory": 16.0 * GIB, "CPU": 8.0}},
                    {"Alive": False, "Resources": {"memory": 64.0 * GIB}},
                    {"Alive": True, "Resources": {"memory": 8.0 * GIB, "object_store_memory": 4.0 * GIB}}]

    assert cluster_memory(FakeRay) == (24 * GIB, 16 * GIB, "available to tasks on the Ray cluster")


def test_run_workers_refuses_an_oversized_plan_before_claiming(tmp_path, humanoid_db):
    more_humanoids(humanoid_db, 998)
    result = rnm(["run-workers", "-j", "1000", "--db", str(tmp_path / "plan.db")], tmp_path)
    assert_usage_error(result, "1000 workers need", "worker(s) fit")
    assert set(humanoid_db.runs_frame()["status"]) == {QUEUED}
    assert not (tmp_path / "rnm-artifacts").exists()


@pytest.mark.slow
def test_run_workers_refuses_a_lease_that_is_not_a_finite_time(tmp_path, humanoid_db):
    db = tmp_path / "plan.db"
    results = rnm_many([["run-workers", "--lease", lease, "--db", db] for lease in ("nan", "inf", "-1")],
                       tmp_path)
    for result in results:
        assert_usage_error(result, "--lease")
    assert set(humanoid_db.runs_frame()["status"]) == {QUEUED}
