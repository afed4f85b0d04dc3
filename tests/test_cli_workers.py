"""`rnm run-workers` as its caller sees it: which runs it says failed, its exit code, the final board, and what it
refuses before any worker starts (one line, exit 2). The refusals call the console script's entry point in this
process; the failure count runs the installed script with real workers."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from types import SimpleNamespace

import pytest
from rich.console import Console

from rnm_cli.workers_cmd import Board
from rnmtd3.registry import DONE, FAILED, QUEUED, open_registry
from rnmtd3.workers import WorkerUpdate

from helpers_registry import describe, queue_tiny, rnm, rnm_here, tiny_config


@pytest.fixture
def queued_db(tmp_path):
    db = tmp_path / "rnm.db"
    with open_registry(db) as registry:
        registry.enqueue([tiny_config()])
    return db


def statuses(db) -> list[str]:
    with open_registry(db, create=False) as registry:
        return list(registry.runs_frame()["status"])


@pytest.mark.slow
def test_runs_failed_at_claim_count_in_the_exit_status_and_the_failed_line(tmp_path):
    """Run 1's stored config does not read and run 3's worker was lost on its last attempt: the registry fails
    both at a claim, no worker reports them, and run-workers still says so."""
    db = tmp_path / "rnm.db"
    queue_tiny(db, tmp_path, seeds=3, steps=200, more=["--max-attempts", "1"])
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET config = 'garbage' WHERE id = 1")
        conn.execute("UPDATE runs SET status = 'running', attempts = 1, lease_expires = 0, claim_token = 'gone' "
                      "WHERE id = 3")
    result = rnm(["run-workers", "-j", "1", "--db", db], tmp_path)
    assert result.returncode == 1, describe(result)
    assert "2 run(s) failed: 1, 3;" in " ".join(result.stderr.split()), describe(result)
    assert statuses(db) == [FAILED, DONE, FAILED]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("lease", ["1e308", "86401", "nan", "9"])
def test_a_lease_beyond_a_day_or_below_ten_seconds_is_refused(lease, queued_db, tmp_path, monkeypatch, capsys):
    """1e308 once passed and crashed every heartbeat thread (a timer that overflows time_t)."""
    code, out, err = rnm_here(["run-workers", "--lease", lease, "--db", queued_db], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "--lease" in err and "86400" in err, (code, out, err)
    assert statuses(queued_db) == [QUEUED] and not (tmp_path / "rnm-artifacts").exists()


def test_a_full_artifacts_filesystem_is_refused_before_any_worker_starts(queued_db, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=2**40, used=2**40 - 4096, free=4096))
    artifacts = tmp_path / "artifacts"
    code, out, err = rnm_here(["run-workers", "--artifacts", artifacts, "--db", queued_db], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "full" in err and "--artifacts" in err, (code, out, err)
    assert statuses(queued_db) == [QUEUED] and not artifacts.exists()
    code, out, err = rnm_here(["train", "--env", "Pendulum-v1", "--out", tmp_path / "run"], monkeypatch, capsys)
    assert code == 2 and "full" in err and not (tmp_path / "run").exists(), (code, out, err)


def test_a_worker_that_died_shows_as_dead_on_the_final_board():
    board = Board(3)
    for worker in (0, 1):
        board.apply(WorkerUpdate(worker, "progress", worker + 1, f"#{worker + 1} Pendulum-v1 2:4 s0", 100, 400, 50.0))
    assert board.exited([0, -9, 1]) == ["worker 1 died (killed by SIGKILL)", "worker 2 died (exit code 1)"]
    assert [board.rows[i].state for i in range(3)] == ["progress", "died", "died"]
    console = Console(width=120, record=True)
    console.print(board.render(SimpleNamespace(url="sqlite:///rnm.db")))
    row = next(line for line in console.export_text().splitlines() if "#2 Pendulum" in line)
    assert "died" in row and "progress" not in row
