"""Memory planning: a replay buffer's size is known before a run starts, and `run-workers` refuses a plan that
cannot fit, saying how many workers would."""

from __future__ import annotations

import pytest

import rnmtd3.resources as resources
from rnmtd3.errors import UsageError
from rnmtd3.registry import QUEUED, open_registry
from rnmtd3.replay import ReplayBuffer
from rnmtd3.resources import replay_bytes
from rnmtd3.sweep import make_config

from helpers_registry import assert_usage_error, rnm

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


def test_a_worker_needs_its_largest_replay_buffer_plus_its_processes(humanoid_db):
    alone = resources.worker_memory(humanoid_db)
    assert alone == replay_bytes(348, 17, 10**6) + resources.PROCESS_OVERHEAD
    assert resources.worker_memory(humanoid_db, eval_helper=True) == alone + resources.PROCESS_OVERHEAD


def test_a_plan_that_does_not_fit_is_refused_with_how_many_would(humanoid_db, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 10 * GIB)
    monkeypatch.setattr(resources, "spare_cores", lambda jobs, threads: False)
    resources.check_memory(humanoid_db, 2)  # 2 x 3.1 GiB fits in 10
    with pytest.raises(UsageError, match=r"at most 3 worker\(s\) fit"):
        resources.check_memory(humanoid_db, 4)


def test_run_workers_refuses_an_oversized_plan_before_claiming(tmp_path, humanoid_db):
    result = rnm(["run-workers", "-j", "1000", "--db", str(tmp_path / "plan.db")], tmp_path)
    assert_usage_error(result, "1000 workers need", "worker(s) fit")
    assert set(humanoid_db.runs_frame()["status"]) == {QUEUED}
    assert not (tmp_path / "rnm-artifacts").exists()
