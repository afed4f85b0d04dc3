"""The registry at the library level: claims and leases, stale writers, failures and retries, concurrency on one
SQLite file, schema migrations, and URL passwords."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
import subprocess
import sys
import threading
import time
import types
import warnings
from collections import Counter

import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

from rnmtd3.errors import DatabaseError, UsageError
from rnmtd3.registry import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Registry, open_registry, safe_url
from rnmtd3.registry.engine import alembic_config, resolve_url
from rnmtd3.registry.models import Base
from rnmtd3.summary import measured_densities, summarize

from rnmtd3.workers import RegistrySink

from helpers_registry import expire_lease, run_row, tiny_config, wait_for


@pytest.fixture
def registry(db_url):
    reg = open_registry(db_url)
    yield reg
    reg.close()


def enqueue(reg: Registry, count: int, max_attempts: int = 3, first_seed: int = 0) -> list[int]:
    result = reg.enqueue([tiny_config(seed=s) for s in range(first_seed, first_seed + count)], max_attempts)
    assert len(result.added) == count
    return run_ids(reg)[-count:]


def run_ids(reg: Registry) -> list[int]:
    return [int(i) for i in reg.runs_frame()["run_id"]]


def record_curve(reg: Registry, claim, steps: int = 400) -> None:
    """Every evaluation of a tiny run, so that `finish` may mark it done."""
    for step in range(0, steps + 1, 100):
        assert reg.record_eval(claim, step, -float(step), 0.0, 0.0)


def lease_left(reg: Registry, run_id: int) -> float:
    """Seconds until the run's lease ends, by the database's clock (the one claims judge it by)."""
    with reg.engine.connect() as conn:
        expires = conn.execute(text("SELECT lease_expires FROM runs WHERE id = :id"), {"id": run_id}).scalar()
    return expires - reg.now()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- queue and claims ------------------------------------------------------------------------------------------

def test_enqueue_is_idempotent(registry):
    configs = [tiny_config(seed=s) for s in range(3)]
    first = registry.enqueue(configs)
    second = registry.enqueue(configs + [tiny_config(seed=3)])
    assert len(first.added) == 3 and not first.existing
    assert [c.seed for c in second.added] == [3] and len(second.existing) == 3
    assert len(registry.runs_frame()) == 4
    dry = registry.enqueue([tiny_config(seed=9)], dry_run=True)
    assert len(dry.added) == 1 and len(registry.runs_frame()) == 4


def test_an_unstructured_pattern_of_any_sparsity_is_stored_whole(registry):
    """PostgreSQL enforces runs.pattern's VARCHAR length: `unstructured:0.875` (18 characters) and the longest text
    a sparsity can have (a float's repr of 23) are stored and read back as queued."""
    patterns = ["unstructured:0.875", "unstructured:2.2250738585072014e-308"]
    assert registry.enqueue([tiny_config(pattern=p) for p in patterns]).added
    assert list(registry.runs_frame()["pattern"]) == patterns
    claim = registry.claim()
    assert str(claim.config.pattern) == patterns[0] and claim.config.pattern.s == 0.875


def test_claim_takes_the_oldest_queued_run_first(registry):
    ids = enqueue(registry, 3)
    claims = [registry.claim() for _ in range(3)]
    assert [c.run_id for c in claims] == ids
    assert all(c.attempts == 1 for c in claims)
    assert len({c.token for c in claims}) == 3
    assert registry.claim() is None
    runs = registry.runs_frame()
    assert set(runs["status"]) == {RUNNING}
    assert set(runs["worker_pid"]) == {os.getpid()}
    # the claim carries the config as queued
    assert claims[0].config == tiny_config(seed=0)


def test_status_of_running_runs_without_a_speed_yet_warns_nothing(registry):
    enqueue(registry, 2)
    registry.claim()
    runs = registry.runs_frame()
    assert runs["steps_per_sec"].dtype == float and runs["last_return"].dtype == float
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' FutureWarnings used to reach the user's terminal here
        summary = summarize(runs, measured_densities(registry))
    assert summary.eta_s is None


def test_lease_expiry_lets_another_worker_take_the_run_over(registry):
    (run_id,) = enqueue(registry, 1)
    first = registry.claim(pid=111)
    assert first.run_id == run_id and first.attempts == 1
    assert registry.claim() is None  # lease still valid
    expire_lease(registry, run_id)
    second = registry.claim(lease_s=60, pid=222)
    assert second is not None and second.run_id == run_id
    assert second.attempts == 2 and second.token != first.token
    record = run_row(registry, run_id)
    assert record["status"] == RUNNING and record["worker_pid"] == 222
    # the old holder learns that it lost the run, the new one keeps it
    assert registry.heartbeat(first) is False
    assert registry.heartbeat(second) is True


def test_an_expired_run_is_claimed_before_newer_queued_runs(registry):
    ids = enqueue(registry, 3)
    old = registry.claim()
    assert registry.claim().run_id == ids[1]
    expire_lease(registry, old.run_id)
    again = registry.claim()
    assert again.run_id == old.run_id == ids[0] and again.attempts == 2
    assert registry.claim().run_id == ids[2]


def test_heartbeat_extends_the_lease(registry):
    enqueue(registry, 1)
    claim = registry.claim(lease_s=60)
    assert 50 < lease_left(registry, claim.run_id) < 61
    expire_lease(registry, claim.run_id)  # silent past its lease, but no one has taken the run over yet
    assert registry.heartbeat(claim, steps_done=700, steps_per_sec=123.0, lease_s=600)
    assert 590 < lease_left(registry, claim.run_id) < 601
    assert registry.claim() is None  # the lease was renewed
    # the heartbeat carries progress, so `rnm status` moves between checkpoints
    assert run_row(registry, claim.run_id)["steps_per_sec"] == 123.0
    assert run_row(registry, claim.run_id)["steps_done"] == 700


def test_a_workers_heartbeat_reports_the_step_it_reached(registry):
    enqueue(registry, 1)
    claim = registry.claim()
    # a 0.4 s lease makes the sink beat every 0.1 s; no one else claims, so the lease may run out under load
    sink = RegistrySink(registry, claim, report=lambda update: None, worker=0, stop=threading.Event(), lease_s=0.4)
    try:
        sink.on_progress(321, 50.0)
        wait_for(lambda: run_row(registry, claim.run_id)["steps_done"] == 321, timeout=60, what="steps_done 321")
    finally:
        sink.close()
    assert run_row(registry, claim.run_id)["steps_per_sec"] == 50.0


def test_writes_with_a_stale_claim_change_nothing(registry):
    enqueue(registry, 1)
    stale = registry.claim(pid=111)
    expire_lease(registry, stale.run_id)
    fresh = registry.claim(pid=222)
    assert registry.record_checkpoint(fresh, 200, "/ckpt/fresh.pt")
    before = run_row(registry, fresh.run_id)
    assert registry.heartbeat(stale, steps_done=400, steps_per_sec=9.0) is False
    assert registry.record_checkpoint(stale, 400, "/ckpt/stale.pt") is False
    assert registry.finish(stale, 400) is False
    assert registry.fail(stale, "stale failure") is False
    assert registry.release(stale) is False
    after = run_row(registry, fresh.run_id)
    assert after == before
    assert after["status"] == RUNNING and after["attempts"] == 2 and after["checkpoint"] == "/ckpt/fresh.pt"
    record_curve(registry, fresh)
    assert registry.heartbeat(fresh) and registry.finish(fresh, 400)
    assert run_row(registry, fresh.run_id)["status"] == DONE


def test_evaluations_and_stats_with_a_stale_claim_change_nothing(registry):
    enqueue(registry, 1)
    stale = registry.claim(pid=111)
    expire_lease(registry, stale.run_id)
    fresh = registry.claim(pid=222)
    registry.record_eval(stale, 300, -1.0, 0.0, 1.0)
    registry.record_stats(stale, 300, {"critic_loss": 1.0})
    assert registry.evals_frame().empty
    assert registry.stats_frame().empty
    assert pd.isna(run_row(registry, fresh.run_id)["last_return"])


def test_evaluations_of_a_step_are_recorded_once_and_last_return_follows_the_curve(registry):
    enqueue(registry, 1)
    claim = registry.claim()
    registry.record_eval(claim, 100, -5.0, 1.0, 2.0)
    registry.record_eval(claim, 100, -7.0, 1.0, 3.0)  # a step reported again
    evals = registry.evals_frame()
    assert list(evals["step"]) == [100]
    # the run's last return is the curve's last point, whichever report of the step the curve kept
    assert run_row(registry, claim.run_id)["last_return"] == evals["return_mean"].iloc[-1]


def test_latest_stats_are_each_runs_newest_value_of_each_name(registry):
    """Read in one query for all runs: the value at a run's newest step of that name (not the newest step of the
    run), NaN for a run or a name without one, and after a resume from a checkpoint, the newest kept value."""
    first, second, _ = enqueue(registry, 3)
    a, b = registry.claim(), registry.claim()
    assert registry.record_stats(a, 1000, {"density_actor": 0.5, "density_critic1": 0.4})
    assert registry.record_stats(a, 2000, {"density_actor": 0.25, "critic_loss": 9.0})
    assert registry.record_stats(a, 3000, {"density_actor": 0.125})
    assert registry.record_stats(b, 1000, {"density_actor": 1.0})
    latest = registry.latest_stats(["density_actor", "density_critic1"]).set_index("run_id")
    assert latest.loc[first].tolist() == [0.125, 0.4] and latest.loc[second, "density_actor"] == 1.0
    assert latest.loc[second, "density_critic1"] != latest.loc[second, "density_critic1"]  # NaN
    assert latest.iloc[2].isna().all() and len(latest) == 3
    assert registry.begin_attempt(a, 2000)  # resumed from its checkpoint at step 2000
    assert registry.latest_stats(["density_actor"]).set_index("run_id").loc[first, "density_actor"] == 0.25


def test_release_puts_the_run_back_without_counting_the_attempt(registry):
    (run_id,) = enqueue(registry, 1)
    claim = registry.claim()
    assert registry.record_checkpoint(claim, 200, "/ckpt/a.pt")
    assert registry.release(claim)
    record = run_row(registry, run_id)
    assert record["status"] == QUEUED and record["attempts"] == 0
    assert pd.isna(record["worker_pid"]) and pd.isna(record["worker_host"])
    assert record["steps_done"] == 200 and record["checkpoint"] == "/ckpt/a.pt"
    assert registry.heartbeat(claim) is False
    again = registry.claim()
    assert again.run_id == run_id and again.attempts == 1 and again.checkpoint == "/ckpt/a.pt"


def test_expire_dead_local_frees_runs_of_dead_processes_only(registry):
    dead_run, live_run = enqueue(registry, 2)
    registry.claim(pid=dead_pid())
    registry.claim(pid=os.getpid())
    assert registry.claim() is None
    assert registry.expire_dead_local() == [dead_run]
    taken = registry.claim()
    assert taken.run_id == dead_run and taken.attempts == 2
    assert run_row(registry, live_run)["status"] == RUNNING
    assert registry.expire_dead_local() == []  # the new holder (this process) is alive


def test_a_killed_but_unreaped_worker_counts_as_dead(registry):
    """A worker killed while its parent has not reaped it yet is a zombie: its run must be freed at once."""
    (run_id,) = enqueue(registry, 1)
    zombie = subprocess.Popen(["true"])
    try:
        wait_for_zombie(zombie.pid)
        registry.claim(pid=zombie.pid)
        assert registry.expire_dead_local() == [run_id]
    finally:
        zombie.wait()


def wait_for_zombie(pid: int) -> None:
    def zombie() -> bool:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(") ", 1)[-1].split()[0] == "Z"

    wait_for(zombie, timeout=60, interval=0.01, what=f"process {pid} to become a zombie")


def test_expire_dead_local_ignores_other_hosts(registry):
    enqueue(registry, 1)
    registry.claim(host="some-other-host", pid=dead_pid())
    assert registry.expire_dead_local() == []
    assert registry.claim() is None


# -- failures, retries, cancellation ---------------------------------------------------------------------------

def test_fail_requeues_until_max_attempts_then_fails(registry):
    (run_id,) = enqueue(registry, 1, max_attempts=2)
    first = registry.claim()
    assert registry.fail(first, "Traceback ...\nRuntimeError: boom 1")
    record = run_row(registry, run_id)
    assert record["status"] == QUEUED and record["attempts"] == 1 and "boom 1" in record["error"]
    second = registry.claim()
    assert second.attempts == 2
    assert registry.fail(second, "RuntimeError: boom 2")
    record = run_row(registry, run_id)
    assert record["status"] == FAILED and record["attempts"] == 2 and "boom 2" in record["error"]
    assert pd.notna(record["finished_at"])
    assert registry.claim() is None
    assert registry.retry_failed() == 1
    record = run_row(registry, run_id)
    assert record["status"] == QUEUED and record["attempts"] == 0
    third = registry.claim()
    assert third.run_id == run_id and third.attempts == 1


def test_a_lost_worker_on_the_last_attempt_fails_the_run(registry):
    (run_id,) = enqueue(registry, 1, max_attempts=1)
    registry.claim()
    expire_lease(registry, run_id)
    assert registry.claim() is None
    record = run_row(registry, run_id)
    assert record["status"] == FAILED and "worker lost" in record["error"]


def test_retry_failed_only_touches_failed_and_cancelled_runs(registry):
    ids = enqueue(registry, 4, max_attempts=1)
    failing, done, running = registry.claim(), registry.claim(), registry.claim()
    registry.fail(failing, "boom")
    record_curve(registry, done)
    assert registry.finish(done, 400)
    assert registry.cancel([ids[3]]) == 1
    with pytest.raises(UsageError, match=f"run {ids[1]} is done"):
        registry.retry_failed([ids[1]])
    assert registry.retry_failed() == 2
    statuses = dict(zip(run_ids(registry), registry.runs_frame()["status"]))
    assert statuses == {ids[0]: QUEUED, ids[1]: DONE, ids[2]: RUNNING, ids[3]: QUEUED}
    assert registry.heartbeat(running)


def test_cancel_running_stops_its_worker_at_the_next_heartbeat(registry):
    ids = enqueue(registry, 3)
    running = registry.claim()
    assert registry.cancel([ids[1]]) == 1
    assert registry.cancel() == 1  # the remaining queued run; the running one is left alone
    assert registry.heartbeat(running)
    assert registry.cancel(include_running=True) == 1
    assert registry.heartbeat(running) is False
    assert registry.finish(running, 400) is False
    assert set(registry.runs_frame()["status"]) == {CANCELLED}
    assert registry.claim() is None


# -- concurrency on one SQLite file ----------------------------------------------------------------------------

def test_concurrent_claims_from_threads_are_exactly_once(db_url):
    db = db_url
    reg = open_registry(db)
    ids = enqueue(reg, 120)
    registries = [open_registry(db, create=False) for _ in range(8)]
    claimed: list[list[int]] = [[] for _ in registries]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(registries))

    def drain(i: int) -> None:
        try:
            barrier.wait()
            while (claim := registries[i].claim()) is not None:
                claimed[i].append(claim.run_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(registries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for r in (reg, *registries):
        r.close()
    assert not errors, errors
    counts = Counter(i for ids_ in claimed for i in ids_)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    print(f"\nthread claims: {len(ids)} runs over {len(registries)} threads, "
          f"per thread {[len(c) for c in claimed]}")


CLAIM_SCRIPT = r"""
import json, os, sys, time
from rnmtd3.registry import open_registry
registry = open_registry(sys.argv[1], create=False)
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.005)
ids = []
while True:
    claim = registry.claim(lease_s=3600)
    if claim is None:
        break
    ids.append(claim.run_id)
print(json.dumps(ids))
"""


@pytest.mark.slow
def test_concurrent_claims_from_processes_are_exactly_once(tmp_path, db_url):
    db = db_url
    reg = open_registry(db)
    ids = enqueue(reg, 200)
    reg.close()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM_SCRIPT, str(db), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    time.sleep(0.5)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "database is locked" not in err
    claimed = [json.loads(out) for out, _ in outputs]
    counts = Counter(i for ids_ in claimed for i in ids_)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    reg = open_registry(db, create=False)
    runs = reg.runs_frame()
    reg.close()
    assert set(runs["status"]) == {RUNNING} and set(runs["attempts"]) == {1}
    assert runs["worker_pid"].nunique() == sum(1 for c in claimed if c)
    print(f"\nprocess claims: {len(ids)} runs over {len(procs)} processes, per process {[len(c) for c in claimed]}")


# -- migrations and schema checks ------------------------------------------------------------------------------

def script_head(reg: Registry) -> str:
    script = ScriptDirectory.from_config(alembic_config(reg.engine))
    heads = script.get_heads()
    assert len(heads) == 1, f"the migrations have several heads: {heads}"
    return heads[0]


def alembic_revision(db) -> str | None:
    with closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_an_empty_file_is_upgraded_to_the_head(tmp_path):
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    reg = open_registry(db)
    try:
        assert alembic_revision(db) == script_head(reg)
        assert reg.runs_frame().empty
    finally:
        reg.close()


def test_models_and_migrations_agree(db_url):
    reg = open_registry(db_url)
    try:
        with reg.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == []
    finally:
        reg.close()


def test_migrations_downgrade_and_upgrade_again(tmp_path):
    db = tmp_path / "d.db"
    reg = open_registry(db)
    try:
        config = alembic_config(reg.engine)
        command.downgrade(config, "base")
        with closing(sqlite3.connect(db)) as conn, conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables <= {"alembic_version"}
        command.upgrade(config, "head")
        assert alembic_revision(db) == script_head(reg)
    finally:
        reg.close()


def test_an_unknown_revision_is_refused_as_newer(tmp_path):
    db = tmp_path / "future.db"
    open_registry(db).close()
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    with pytest.raises(DatabaseError, match="newer"):
        open_registry(db)
    assert alembic_revision(db) == "ffff_from_the_future"


def test_a_foreign_sqlite_database_is_refused(tmp_path):
    db = tmp_path / "foreign.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    with pytest.raises(DatabaseError, match="not an rnm database"):
        open_registry(db)
    with closing(sqlite3.connect(db)) as conn, conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"notes"}


def test_a_missing_database_is_not_created_when_create_is_false(tmp_path):
    with pytest.raises(UsageError, match="no rnm database"):
        open_registry(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    registry = open_registry(tmp_path / "wal.db")
    with registry.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar().lower() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000


# -- URLs and passwords ----------------------------------------------------------------------------------------

SECRET = "s3cr3t-pw"
PG_URL = f"postgresql://alice:{SECRET}@127.0.0.1:1/rnm"


def test_a_url_password_never_appears_in_the_registry_url():
    fake_engine = types.SimpleNamespace(url=make_url(PG_URL))
    reg = Registry(fake_engine)
    assert SECRET not in reg.url
    assert "alice" in reg.url and "127.0.0.1" in reg.url
    assert SECRET not in safe_url(PG_URL)
    assert resolve_url(PG_URL) == PG_URL  # the URL itself is used as given


def test_a_url_password_never_appears_in_errors():
    with pytest.raises(Exception) as info:
        open_registry(PG_URL)
    assert SECRET not in str(info.value)
    with pytest.raises(UsageError) as info:
        resolve_url(f"post gres://alice:{SECRET}@host/db")
    assert SECRET not in str(info.value)


def test_a_url_with_a_bad_port_is_a_usage_error():
    with pytest.raises(UsageError) as info:
        resolve_url(f"postgresql://alice:{SECRET}@host:notaport/db")
    assert SECRET not in str(info.value)


def test_a_sqlite_url_resolves_and_a_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNM_DB", raising=False)
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'rnm.db'}"
    assert resolve_url("x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("RNM_DB", str(tmp_path / "env.db"))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    assert resolve_url("other.db") == f"sqlite:///{tmp_path / 'other.db'}"
