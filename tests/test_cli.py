"""The `rnm` command line as a user runs it (MISSION.md section 4): queue, refusals, foreign databases, export,
train, status/retry/cancel after a real failure, and passwords kept out of output.

Every call is a subprocess of the installed console script; independent calls run together (rnm_many) because each
one pays the import of torch.
"""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing

import pandas as pd
import pytest
import torch

from rnmtd3.checkpoint import check_sparsity
from rnmtd3.registry import CANCELLED, DONE, FAILED, QUEUED, open_registry
from rnmtd3.td3 import NETWORKS

from helpers_registry import (assert_usage_error, describe, queue_tiny, rnm, rnm_many, snapshot, tiny_config,
                              tiny_set_args)

QUEUE_OK = ["queue", "--envs", "Pendulum-v1", "--patterns", "2:4", "--seeds", "1", "--no-baseline"]
SECRET = "s3cr3t-pw"


def flat(text: str) -> str:
    """Output with rich's line wrapping undone (it wraps at 80 columns when not on a terminal)."""
    return " ".join(text.split())


def registry_runs(db):
    registry = open_registry(db, create=False)
    try:
        return registry.runs_frame()
    finally:
        registry.close()


def make_rnm_db(db, runs: int = 1):
    registry = open_registry(db)
    registry.enqueue([tiny_config(seed=s) for s in range(runs)])
    registry.close()


# -- queue -----------------------------------------------------------------------------------------------------

def test_queue_resolves_names_adds_the_baseline_and_is_idempotent(tmp_path):
    db = tmp_path / "q.db"
    args = ["queue", "--envs", "Pendulum", "--patterns", "2:4", "--seeds", "2", "--steps", "400",
            *tiny_set_args(), "--db", db]
    first = rnm(args, tmp_path)
    assert first.returncode == 0, describe(first)
    assert "added 4 run(s)" in flat(first.stderr)
    runs = registry_runs(db)
    assert sorted(zip(runs["pattern"], runs["seed"])) == [("2:4", 0), ("2:4", 1), ("dense", 0), ("dense", 1)]
    assert set(runs["env"]) == {"Pendulum-v1"}  # the short name resolved to the newest version
    assert set(runs["status"]) == {QUEUED} and set(runs["steps_total"]) == {400}
    before = snapshot(tmp_path)
    second = rnm(args, tmp_path)
    assert second.returncode == 0, describe(second)
    assert "added 0 run(s)" in flat(second.stderr) and "4 already there" in flat(second.stderr)
    assert "Traceback" not in second.stderr
    assert len(registry_runs(db)) == 4
    assert snapshot(tmp_path).keys() == before.keys()


BAD_QUEUE_ARGS = {
    "pattern 4:2": (["--patterns", "4:2"], "4:2"),
    "env Foo": (["--envs", "Foo"], "Foo"),
    "steps=-1": (["--set", "steps=-1"], "steps"),
    "nokey=1": (["--set", "nokey=1"], "nokey"),
}


def bad_queue(change: list[str], db) -> list[str]:
    args = list(QUEUE_OK)
    if change[0] in args:  # replace the option's value
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += change
    return [*args, "--db", db]


@pytest.mark.slow
def test_a_refused_queue_changes_no_database_and_creates_none(tmp_path):
    existing, fresh = tmp_path / "existing", tmp_path / "fresh"
    existing.mkdir()
    fresh.mkdir()
    make_rnm_db(existing / "rnm.db", runs=2)
    before = snapshot(existing)
    assert "rnm.db" in before
    cases = list(BAD_QUEUE_ARGS.items())
    results = rnm_many([bad_queue(change, existing / "rnm.db") for _, (change, _) in cases], existing)
    results += rnm_many([bad_queue(change, fresh / "new.db") for _, (change, _) in cases], fresh)
    for (name, (_, needle)), result in zip(cases + cases, results):
        line = assert_usage_error(result, needle)
        if name == "env Foo":  # the message lists the valid names
            assert all(env in line for env in ("Ant", "Hopper", "HalfCheetah", "Walker2d")), line
    assert snapshot(existing) == before
    assert list(fresh.iterdir()) == []


# -- databases that are not rnm's ------------------------------------------------------------------------------

def foreign_sqlite(path):
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    return path


def assert_db_unchanged(before: dict[str, bytes], after: dict[str, bytes], name: str) -> None:
    """The database file is byte-for-byte the same and its WAL holds nothing new.

    (Two processes that open and close a WAL database at the same moment may both leave the -wal and -shm files
    behind; an empty -wal and the -shm index hold no data.)
    """
    assert after[name] == before[name], f"{name} changed"
    wal = f"{name}-wal"
    assert after.get(wal, b"") in (before.get(wal, b""), b""), f"{wal} holds new frames"


def future_rnm_db(path):
    make_rnm_db(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    return path


@pytest.mark.slow
def test_foreign_and_newer_databases_are_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("just some text, not a database\n")
    sqlite_file = foreign_sqlite(tmp_path / "other.db")
    newer = future_rnm_db(tmp_path / "newer.db")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    before = snapshot(tmp_path)
    cases = [(text, "not a SQLite"), (sqlite_file, "not an rnm database"), (newer, "newer"), (folder, "folder")]
    commands = [[*QUEUE_OK, "--db", path] for path, _ in cases] + [["status", "--db", text], ["status", "--db", newer]]
    results = rnm_many(commands, tmp_path)
    for result, (path, needle) in zip(results, cases + [cases[0], cases[2]]):
        assert_usage_error(result, needle)
    after = snapshot(tmp_path)
    assert after["notes.txt"] == before["notes.txt"]
    assert_db_unchanged(before, after, "newer.db")
    assert set(after) - {"other.db-wal", "other.db-shm", "newer.db-wal", "newer.db-shm"} == set(before)
    with closing(sqlite3.connect(sqlite_file)) as conn, conn:
        assert conn.execute("SELECT x FROM notes").fetchall() == [("keep me",)]
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["notes"]


def test_a_refused_foreign_sqlite_file_is_left_byte_for_byte(tmp_path):
    sqlite_file = foreign_sqlite(tmp_path / "other.db")
    before = snapshot(tmp_path)
    result = rnm(["status", "--db", sqlite_file], tmp_path)
    assert_usage_error(result, "not an rnm database")
    assert snapshot(tmp_path) == before


def test_commands_on_a_missing_database_create_nothing(tmp_path):
    db = tmp_path / "missing.db"
    commands = [["status", "--db", db], ["export", "evals", "--db", db], ["retry", "--db", db],
                ["run-workers", "--db", db], ["report", "--format", "markdown", "--db", db]]
    results = rnm_many(commands, tmp_path)
    report = results.pop()
    for result in results:
        assert_usage_error(result, "no rnm database")
    assert list(tmp_path.iterdir()) == []
    if "No such command 'report'" in report.stderr:
        pytest.skip("`rnm report` is not registered yet (cli/report_cmd.py is a placeholder)")
    assert_usage_error(report, "no rnm database")
    assert list(tmp_path.iterdir()) == []


def test_a_database_password_never_appears_in_output(tmp_path):
    url = f"postgresql://alice:{SECRET}@127.0.0.1:1/rnm"
    results = rnm_many([["status", "--db", url], [*QUEUE_OK, "--db", url]], tmp_path)
    for result in results:
        assert result.returncode != 0, describe(result)
        assert SECRET not in result.stdout + result.stderr, describe(result)
        assert "Traceback" not in result.stderr, describe(result)
        assert len(result.stderr.strip().splitlines()) == 1, describe(result)
    assert list(tmp_path.iterdir()) == []


# -- export ----------------------------------------------------------------------------------------------------

def test_export_has_the_contract_columns(tmp_path):
    db = tmp_path / "e.db"
    make_rnm_db(db, runs=2)
    registry = open_registry(db, create=False)
    claim = registry.claim()
    curve = [(step, -1500.0 + step) for step in range(0, 401, claim.config.eval_interval)]  # complete: done
    for step, value in curve:
        registry.record_eval(claim, step, value, 3.5, step / 100)
    registry.record_checkpoint(claim, 200, str(tmp_path / "ckpt.pt"))
    assert registry.finish(claim, 400)
    registry.close()
    evals_out, runs_out = rnm_many(
        [["export", "evals", "--format", "csv", "--db", db], ["export", "runs", "--format", "csv", "--db", db]],
        tmp_path)
    for result in (evals_out, runs_out):
        assert result.returncode == 0, describe(result)
    evals = pd.read_csv(io.StringIO(evals_out.stdout))
    assert {"run_id", "env", "pattern", "seed", "step", "return_mean", "return_std"} <= set(evals.columns)
    assert list(zip(evals["step"], evals["return_mean"])) == curve
    assert set(evals["env"]) == {"Pendulum-v1"} and set(evals["pattern"].astype(str)) == {"2:4"}
    runs = pd.read_csv(io.StringIO(runs_out.stdout))
    assert {"run_id", "env", "pattern", "seed", "status", "attempts", "steps_done", "checkpoint"} <= set(runs.columns)
    assert list(runs["status"]) == [DONE, QUEUED] and list(runs["seed"]) == [0, 1]
    assert runs.loc[0, "checkpoint"] == str(tmp_path / "ckpt.pt") and runs.loc[0, "steps_done"] == 400
    assert runs.loc[0, "attempts"] == 1 and runs.loc[1, "attempts"] == 0


# -- train -----------------------------------------------------------------------------------------------------

TRAIN = ["train", "--env", "Hopper", "--pattern", "2:4", "--seed", "0", "--steps", "600", "--set", "start_steps=200",
         "--set", "eval_interval=200", "--set", "eval_episodes=1", "--set", "hidden=16x16", "--set", "batch_size=64"]


def test_train_writes_a_checkpoint_and_evals(tmp_path):
    out = tmp_path / "run"
    result = rnm([*TRAIN, "--out", out], tmp_path)
    assert result.returncode == 0, describe(result)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"actor", "critic1", "critic2", "actor_target", "critic1_target", "critic2_target", "config"} <= set(checkpoint)
    assert set(NETWORKS) == {"actor", "critic1", "critic2", "actor_target", "critic1_target", "critic2_target"}
    assert checkpoint["config"]["pattern"] == "2:4" and checkpoint["config"]["env"] == "Hopper-v5"
    assert checkpoint["config"]["steps"] == 600 and list(checkpoint["config"]["hidden"]) == [16, 16]
    assert all(isinstance(t, torch.Tensor) for name in NETWORKS for t in checkpoint[name].values())
    assert all(check_sparsity(out / "checkpoint.pt").values())
    evals = pd.read_csv(out / "evals.csv")
    assert {"step", "return_mean", "return_std"} <= set(evals.columns)
    assert list(evals["step"]) == [0, 200, 400, 600]


BAD_TRAIN = {
    "pattern 4:2": (["--pattern", "4:2"], "4:2"),
    "pattern 0:4": (["--pattern", "0:4"], "0:4"),
    "pattern 2:x": (["--pattern", "2:x"], "2:x"),
    "pattern 3:3": (["--pattern", "3:3"], "3:3"),
    "env Foo": (["--env", "Foo"], "Hopper"),  # the message lists the valid names
    "hidden=abc": (["--set", "hidden=abc"], "hidden"),
    "grad_mode=foo": (["--set", "grad_mode=foo"], "grad_mode"),
    "nokey=1": (["--set", "nokey=1"], "nokey"),
    "steps=-1": (["--set", "steps=-1"], "steps"),
    "out under a file": (["--out", "a-file/run"], "a-file"),
}


def bad_train(change: list[str], out) -> list[str]:
    args = [a for a in TRAIN if a not in ("--steps", "600")] if change[1].startswith("steps=") else list(TRAIN)
    if change[0] in args and change[0] != "--set":
        args[args.index(change[0]) + 1] = change[1]
    elif change[0] != "--out":
        args += change
    return [*args, "--out", change[1] if change[0] == "--out" else out]


@pytest.mark.slow
def test_train_refuses_bad_input_and_creates_nothing(tmp_path):
    (tmp_path / "a-file").write_text("a regular file, so no folder can be made under it\n")
    before = snapshot(tmp_path)
    commands = [bad_train(change, f"out-{i}") for i, (change, _) in enumerate(BAD_TRAIN.values())]
    results = rnm_many(commands, tmp_path)
    for (name, (_, needle)), result in zip(BAD_TRAIN.items(), results):
        assert_usage_error(result, needle)
        if name == "env Foo":
            assert "Foo" in result.stderr and "Walker2d" in result.stderr
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_train_refuses_steps_given_twice(tmp_path):
    result = rnm(["train", "--env", "Pendulum-v1", "--steps", "200", *tiny_set_args(), "--set", "steps=-1",
                  "--out", tmp_path / "run"], tmp_path)
    assert_usage_error(result, "steps")
    assert list(tmp_path.iterdir()) == []


# -- a run that fails for real: status, retry, cancel ----------------------------------------------------------

@pytest.mark.slow
def test_status_retry_and_cancel_after_a_real_failure(tmp_path):
    db = tmp_path / "f.db"
    # a config that validates but cannot train: the device does not exist on any machine
    queue_tiny(db, tmp_path, seeds=1, steps=200, extra=["device=cuda:99"], more=["--max-attempts", "2"])
    workers = rnm(["run-workers", "-j", "1", "--db", db], tmp_path)
    assert workers.returncode == 1 and "1 run(s) failed: 1" in flat(workers.stderr), describe(workers)
    runs = registry_runs(db)
    # retrying cannot bring a missing device: failed at once, one attempt, its one-line reason
    assert list(runs["status"]) == [FAILED] and list(runs["attempts"]) == [1]
    assert runs.loc[0, "error"].startswith("UsageError: device=cuda:99") and "\n" not in runs.loc[0, "error"]
    assert "Traceback" not in workers.stderr + workers.stdout
    status = rnm(["status", "--db", db], tmp_path)
    assert status.returncode == 0, describe(status)
    assert "failed runs" in flat(status.stdout) and "rnm retry" in flat(status.stdout)
    last_error_line = runs.loc[0, "error"].strip().splitlines()[-1].strip()
    exception_name = last_error_line.split(":")[0]  # e.g. RuntimeError; the table may wrap the rest
    assert exception_name in status.stdout, (last_error_line, status.stdout)

    retry = rnm(["retry", "--db", db], tmp_path)
    assert retry.returncode == 0 and "1 run(s) back in the queue" in flat(retry.stderr), describe(retry)
    runs = registry_runs(db)
    assert list(runs["status"]) == [QUEUED] and list(runs["attempts"]) == [0]

    cancel = rnm(["cancel", "--all", "--db", db], tmp_path)
    assert cancel.returncode == 0 and "1 run(s) cancelled" in flat(cancel.stderr), describe(cancel)
    assert list(registry_runs(db)["status"]) == [CANCELLED]


def test_read_commands_leave_an_empty_database_file_untouched(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for command in (["status"], ["export", "runs"], ["report"]):
        assert_usage_error(rnm([*command, "--db", empty], tmp_path), "no rnm database")
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_train_refuses_an_out_folder_the_filesystem_will_not_create(tmp_path):
    for out in ("/proc/rnm-test-out", str(tmp_path / "file" / "sub")):
        (tmp_path / "file").write_text("x")
        assert_usage_error(rnm(["train", "--env", "Hopper", "--out", out], tmp_path), "cannot be created")
