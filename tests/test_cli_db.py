"""Databases that rnm cannot or must not write, as a user meets them on the command line: a read-only file or folder,
a full disk, another application's file, a newer schema, an unreachable server with a password in its URL. Every
command answers with one line and exit code 2, names the fix, leaves a refused file as it was and shows no secret.

Root ignores file modes, so as root a read-only file or folder is a read-only bind mount, and a full disk a small
tmpfs, both made in a mount namespace of the command's own (unshare), which vanishes with it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Sequence

import pytest

from rnmtd3.registry import open_registry

from helpers_registry import RNM, cli_env, describe, snapshot, tiny_config

WRITING = {
    "queue": ["queue", "--envs", "Pendulum-v1", "--patterns", "1:4", "--seeds", "1", "--no-baseline"],
    "run-workers": ["run-workers"],
}
READING = {
    "status": ["status"],
    "export": ["export", "runs", "--format", "csv"],
    "report": ["report", "--format", "markdown"],
}
"""Commands that only read open the database read-only: they work on a read-only or full disk and write
nothing; the report here finds no finished run, a usage error of its own, not of the disk."""
COMMANDS = WRITING | READING
ROOT = os.geteuid() == 0
UNSHARE = ["unshare", "--mount"] if ROOT else ["unshare", "--map-root-user", "--mount"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """An rnm database with one queued run, made once: tests copy it."""
    path = tmp_path_factory.mktemp("template") / "rnm.db"
    registry = open_registry(path)
    registry.enqueue([tiny_config()])
    registry.close()
    return path


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory) -> None:
    """Skip where this user may not mount in a namespace of its own (no root, no unprivileged user namespaces)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here, and the case needs a mount of its own")
    probe = subprocess.run([*UNSHARE, "mount", "-t", "tmpfs", "tmpfs", str(tmp_path_factory.mktemp("probe"))],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount in a private namespace here ({probe.stderr.strip()}), and the case needs a mount")


def run_all(argvs: Sequence[Sequence[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Several independent command lines at once (each pays the CLI's start-up)."""
    procs = [subprocess.Popen(list(map(str, argv)), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in argvs]
    results = []
    for argv, proc in zip(argvs, procs):
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(["unshare", *map(str, argv)], proc.returncode, out, err))
    return results


def confined(setup: str, args: Sequence[str]) -> list[str]:
    """The command line of `rnm ARGS` run after the shell commands `setup`, in a mount namespace of its own."""
    return [*UNSHARE, "sh", "-ec", f'{setup}\nexec "$@"', "sh", str(RNM), *map(str, args)]


def assert_one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one line on stderr naming the fix, no traceback and no SQL."""
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr + result.stdout and "[SQL" not in result.stderr, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    for needle in needles:
        assert needle in lines[0], describe(result)
    return lines[0]


# -- read-only, full -------------------------------------------------------------------------------------------

def assert_read(results: Sequence[subprocess.CompletedProcess]) -> None:
    """The reading commands, in READING's order, worked (the report: its own one line, no finished run)."""
    status, export, report = results
    assert status.returncode == 0 and "Pendulum-v1" in status.stdout, describe(status)
    assert export.returncode == 0 and export.stdout.startswith("run_id,"), describe(export)
    assert_one_line(report, "no finished runs match (1 queued)")


@pytest.mark.slow
def test_a_read_only_database_file_is_read_by_reading_commands_and_refused_by_writing_ones(tmp_path, template,
                                                                                          request):
    db = tmp_path / "ro" / "rnm.db"
    db.parent.mkdir()
    shutil.copy(template, db)
    db.chmod(0o444)
    before = snapshot(db.parent)
    if ROOT:
        request.getfixturevalue("can_mount")
        setup = f"mount --bind {db} {db}\nmount -o remount,bind,ro {db}"
        argvs = [confined(setup, [*args, "--db", db]) for args in COMMANDS.values()]
    else:
        argvs = [[RNM, *args, "--db", db] for args in COMMANDS.values()]
    results = run_all(argvs, tmp_path)
    for result in results[:len(WRITING)]:
        assert_one_line(result, str(db), "read-only", "--db")
    assert_read(results[len(WRITING):])
    assert snapshot(db.parent) == before


@pytest.mark.slow
def test_a_database_in_a_read_only_folder_is_read_by_reading_commands_and_refused_by_writing_ones(
        tmp_path, template, request):
    """SQLite writes -wal and -shm files beside a database, so a writable file in a read-only folder cannot be
    written; reading commands open it read-only and create nothing there."""
    folder, db = tmp_path / "ro", tmp_path / "ro" / "rnm.db"
    folder.mkdir()
    shutil.copy(template, db)
    if ROOT:  # the folder read-only, then the file mounted writable over its place in it
        request.getfixturevalue("can_mount")
        writable = tmp_path / "writable.db"
        shutil.copy(template, writable)
        setup = f"mount --bind {folder} {folder}\nmount -o remount,bind,ro {folder}\nmount --bind {writable} {db}"
        argvs = [confined(setup, [*args, "--db", db]) for args in COMMANDS.values()]
    else:
        argvs = [[RNM, *args, "--db", db] for args in COMMANDS.values()]
    folder.chmod(0o555)
    try:
        results = run_all(argvs, tmp_path)
    finally:
        folder.chmod(0o755)
    for result in results[:len(WRITING)]:
        assert_one_line(result, str(db), "read-only folder", "--db")
    assert_read(results[len(WRITING):])


def fill_tmpfs(folder: Path, template: Path, leave_kib: int) -> str:
    """Shell commands that mount a small tmpfs on `folder`, copy the database in and fill it to `leave_kib` free."""
    return (f"mount -t tmpfs -o size=1m tmpfs {folder}\ncp {template} {folder}/rnm.db\n"
            f"avail=$(df -k --output=avail {folder} | tail -n 1)\n"
            f"dd if=/dev/zero of={folder}/filler bs=1k count=$((avail - {leave_kib})) 2>/dev/null")


@pytest.mark.slow
def test_on_a_full_disk_writing_commands_say_so_and_reading_ones_still_read(tmp_path, template, can_mount):
    folder = tmp_path / "full"
    folder.mkdir()
    db = folder / "rnm.db"
    full = fill_tmpfs(folder, template, 0)
    argvs = [confined(full, [*args, "--db", db]) for args in COMMANDS.values()]
    # room for SQLite's -shm index, so the command opens the database and fails on its first write
    big_queue = ["queue", "--envs", "Pendulum-v1", "--patterns", "1:4,1:8", "--seeds", "100", "--db", db]
    argvs.append(confined(fill_tmpfs(folder, template, 48), big_queue))
    results = run_all(argvs, tmp_path)
    for result in results[:len(WRITING)]:
        assert_one_line(result, str(db), "disk")
    assert_read(results[len(WRITING):len(COMMANDS)])
    assert_one_line(results[-1], str(db), "full disk", "free some space")


# -- refused files stay as they were ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_refused_wal_file_and_a_newer_database_are_left_byte_for_byte_with_nothing_beside_them(tmp_path, template):
    foreign, newer = tmp_path / "foreign" / "other.db", tmp_path / "newer" / "rnm.db"
    foreign.parent.mkdir()
    newer.parent.mkdir()
    with closing(sqlite3.connect(foreign)) as conn, conn:
        conn.execute("PRAGMA journal_mode = wal")  # -wal and -shm appear beside it as soon as anyone opens it
        conn.execute("CREATE TABLE notes (x TEXT)")
    shutil.copy(template, newer)
    with closing(sqlite3.connect(newer)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
        conn.execute("PRAGMA journal_mode = delete")  # the mode rnm's WAL pragma would rewrite in its header
    before = {path: snapshot(path.parent) for path in (foreign, newer)}
    argvs = [[RNM, *COMMANDS[name], "--db", path] for path in (foreign, newer) for name in ("status", "queue",
                                                                                           "run-workers")]
    results = run_all(argvs, tmp_path)
    for result in results[:3]:
        assert_one_line(result, "not an rnm database", "--db")
    for result in results[3:]:
        assert_one_line(result, "newer", "upgrade rnm")
    for path, files in before.items():
        assert snapshot(path.parent) == files


# -- no secret in output ---------------------------------------------------------------------------------------

SECRETS = ("pw-in-url", "pw-in-query", "pw-ssl", "pw-odbc")
PG_URL = "postgresql+psycopg://alice:pw-in-url@127.0.0.1:1/rnm?password=pw-in-query&sslpassword=pw-ssl"
ODBC_URL = "mssql+pyodbc://alice@127.0.0.1:1/rnm?odbc_connect=DRIVER%3D%7BODBC%7D%3BUID%3Dalice%3BPWD%3Dpw-odbc"


@pytest.mark.slow
def test_no_command_shows_a_password_from_any_part_of_an_unreachable_database_url(tmp_path):
    argvs = [[RNM, *args, "--db", PG_URL] for args in COMMANDS.values()]
    argvs += [[RNM, *COMMANDS[name], "--db", ODBC_URL] for name in ("status", "queue")]
    for result in run_all(argvs, tmp_path):
        line = assert_one_line(result, "***")
        for secret in SECRETS:
            assert secret not in result.stdout + result.stderr, describe(result)
        assert "127.0.0.1:1" in line, line
    assert list(tmp_path.iterdir()) == []
