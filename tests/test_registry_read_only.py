"""A registry opened read-only (`open_registry(db, create=False, read_only=True)`, for the commands that only read)
writes nothing: not to the file (its bytes, its journal mode, its identity rows), not beside it (no -wal or -shm), and
not to a server; it reads files and folders that cannot be written, and an older schema through an upgraded copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from rnmtd3.errors import DatabaseError, TransientDatabaseError, UsageError
from rnmtd3.registry import open_registry
from rnmtd3.registry.engine import alembic_config, make_engine

from helpers_registry import tiny_config

SAVED = Path(__file__).parent / "data"


def make_db(path) -> Path:
    """An rnm database (WAL mode, as rnm leaves it) with two runs, an evaluation and a statistic, writer closed."""
    with open_registry(path) as registry:
        registry.enqueue([tiny_config(seed=0), tiny_config(seed=1)])
        claim = registry.claim()
        registry.record_eval(claim, 0, -1200.0, 3.0, 0.1)
        registry.record_stats(claim, 100, {"sad_actor": 0.25})
    return Path(path)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of `folder` with the md5 of its bytes (a folder in it, by its name)."""
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.iterdir())}


def read_everything(db) -> dict[str, int]:
    """What the read commands read (status, report, export, queue --dry-run), through a read-only registry."""
    with open_registry(db, create=False, read_only=True) as registry:
        return {"runs": len(registry.runs_frame()), "evals": len(registry.evals_frame()),
                "stats": len(registry.stats_frame()), "attempts": len(registry.attempts_frame()),
                "latest": len(registry.latest_stats(["sad_actor"]).dropna()),
                "would_add": len(registry.enqueue([tiny_config(seed=0), tiny_config(seed=7)], dry_run=True).added),
                "clock": int(registry.now() > 0)}


EVERYTHING = {"runs": 2, "evals": 1, "stats": 1, "attempts": 0, "latest": 1, "would_add": 1, "clock": 1}


def in_wal_mode(path: Path) -> bool:
    """The file's own word, its header's read and write versions (2 for WAL, 1 for a rollback journal)."""
    versions = path.read_bytes()[18:20]
    assert versions in (b"\x01\x01", b"\x02\x02")
    return versions == b"\x02\x02"


def identity_rows(path: Path) -> dict[str, str]:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)) as conn:
        return dict(conn.execute("SELECT key, value FROM registry_info"))


def test_a_rollback_journal_database_keeps_its_bytes_and_mode_and_gets_no_wal(tmp_path):
    db = make_db(tmp_path / "j.db")
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode = delete").fetchone()[0] == "delete"
    before = snapshot(tmp_path)
    assert read_everything(db) == EVERYTHING
    assert snapshot(tmp_path) == before  # same bytes, and no -wal, -shm or -journal beside it
    assert not in_wal_mode(db)


def test_a_wal_database_with_no_writer_gets_no_wal_or_shm_files(tmp_path):
    db = make_db(tmp_path / "w.db")
    before = snapshot(tmp_path)
    assert list(before) == ["w.db"] and in_wal_mode(db)
    assert read_everything(db) == EVERYTHING
    assert snapshot(tmp_path) == before


def test_a_read_only_file_in_a_read_only_folder_reads(tmp_path):
    """As root, permission bits stop nothing: the read is repeated as `nobody`, for whom they do (and for whom a
    writable open is refused, so the read-only one is shown to need no write)."""
    folder = Path(tempfile.mkdtemp())  # outside pytest's tmp folders, which only their owner may enter
    try:
        db = make_db(folder / "archive.db")
        db.chmod(0o444)
        folder.chmod(0o555)
        before = snapshot(folder)
        assert read_everything(db) == EVERYTHING
        assert snapshot(folder) == before
        if os.geteuid() == 0:
            assert as_nobody(unprivileged_reads, db) == {"writable open": "refused", **EVERYTHING}
            assert snapshot(folder) == before
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def unprivileged_reads(db: Path) -> dict:
    try:
        open_registry(db, create=False).close()
    except DatabaseError:
        refused = "refused"
    else:
        refused = "opened"
    return {"writable open": refused, **read_everything(db)}


def as_nobody(function, *args) -> dict:
    """`function(*args)` in a forked child that has dropped root for the `nobody` user: its JSON result.

    Skipped where `nobody` cannot read Python's or rnm's own files (a checkout in a private home): an OSError or
    ImportError there says nothing about the database."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(reader)
            os.setgid(65534)
            os.setuid(65534)
            result = {"value": function(*args)}
        except (OSError, ImportError) as error:
            result = {"skip": f"{type(error).__name__}: {error}"}
        except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the test
            result = {"error": f"{type(error).__name__}: {error}"}
        finally:
            os.write(writer, json.dumps(result).encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        result = json.loads(pipe.read())
    os.waitpid(pid, 0)
    if "skip" in result:
        pytest.skip(f"the user nobody cannot run rnm here ({result['skip']})")
    assert "error" not in result, result["error"]
    return result["value"]


def test_a_copy_read_read_only_keeps_the_identity_rows_a_writer_would_change(tmp_path):
    original = make_db(tmp_path / "pilot.db")
    copy = tmp_path / "final.db"
    shutil.copy(original, copy)
    before = snapshot(tmp_path)
    assert read_everything(copy) == EVERYTHING
    assert snapshot(tmp_path) == before
    assert identity_rows(copy) == identity_rows(original)
    with open_registry(copy, create=False):  # a writer tells the copy apart: the rows read-only left alone
        pass
    assert identity_rows(copy)["database_id"] != identity_rows(original)["database_id"]


def test_a_reader_sees_what_a_live_writer_has_committed_to_its_wal(tmp_path):
    db = make_db(tmp_path / "live.db")
    with open_registry(db, create=False) as writer:
        writer.enqueue([tiny_config(seed=5)])
        assert (tmp_path / "live.db-wal").exists()
        with open_registry(db, create=False, read_only=True) as reader:
            assert sorted(reader.runs_frame()["seed"]) == [0, 1, 5]
            writer.enqueue([tiny_config(seed=6)])  # a reader holds no write lock
            assert sorted(reader.runs_frame()["seed"]) == [0, 1, 5, 6]


def test_a_read_the_file_changed_under_is_refused(tmp_path):
    """An immutable read takes no lock: if a writer checkpoints into the file meanwhile, what was read is refused."""
    db = make_db(tmp_path / "busy.db")
    os.utime(db, ns=(0, 0))  # so that the writer's change shows in the modification time, however coarse the clock
    with open_registry(db, create=False, read_only=True) as reader:
        with pytest.raises(TransientDatabaseError, match="changed while rnm read it"):
            with reader.engine.begin() as conn:
                conn.execute(text("SELECT count(*) FROM runs")).scalar()
                with open_registry(db, create=False) as writer:
                    writer.enqueue([tiny_config(seed=5)])
        assert len(reader.runs_frame()) == 3  # the next read sees the new file


@pytest.mark.parametrize("make, message", [
    (lambda path: None, "no rnm database at {path}; queue runs first or give --db"),
    (lambda path: path.touch(), "no rnm database at {path} (the file is empty); queue runs first or give --db"),
    (lambda path: path.mkdir(), "--db {path} is a folder, not a database file"),
])
def test_what_a_read_cannot_open_gets_the_one_line_a_writer_gets_and_nothing_is_made(tmp_path, make, message):
    path = tmp_path / "x.db"
    make(path)
    before = snapshot(tmp_path)
    for read_only in (False, True):
        with pytest.raises(UsageError) as refused:
            open_registry(path, create=False, read_only=read_only)
        assert str(refused.value) == message.format(path=path)
    assert snapshot(tmp_path) == before


def test_a_foreign_or_newer_database_is_refused_as_a_writer_refuses_it(tmp_path):
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as conn, conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    newer = make_db(tmp_path / "newer.db")
    with closing(sqlite3.connect(newer)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    before = snapshot(tmp_path)
    with pytest.raises(DatabaseError, match="is not an rnm database"):
        open_registry(foreign, create=False, read_only=True)
    with pytest.raises(DatabaseError, match="newer than this rnm knows; upgrade rnm"):
        open_registry(newer, create=False, read_only=True)
    assert snapshot(tmp_path) == before
    with pytest.raises(ValueError, match="cannot create"):
        open_registry(tmp_path / "new.db", read_only=True)


def test_every_write_through_a_read_only_registry_fails_loudly(db_url):
    with open_registry(db_url) as registry:
        registry.enqueue([tiny_config()])
    with open_registry(db_url, create=False, read_only=True) as registry:
        for write in (lambda: registry.enqueue([tiny_config(seed=3)]), registry.claim, registry.retry_failed,
                      registry.cancel, lambda: registry.database_id):
            with pytest.raises(RuntimeError, match="open read-only"):
                write()
        with pytest.raises((DatabaseError, DBAPIError)):  # below the registry, the database refuses it too
            with registry.engine.begin() as conn:
                conn.execute(text("DELETE FROM runs"))
        assert list(registry.runs_frame()["status"]) == ["queued"]


def test_an_older_sqlite_database_reads_through_an_upgraded_copy_and_stays_as_it_was(tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(SAVED / "registry-0001.db", db)
    before = snapshot(tmp_path)
    with open_registry(db, create=False, read_only=True) as registry:
        runs, evals = registry.runs_frame(), registry.evals_frame()
        assert list(runs["status"]) == ["done", "done", "queued", "queued"] and runs["notes"].isna().all()
        assert evals.groupby("run_id")["step"].apply(list).to_dict() == {1: [0, 200, 400], 2: [0, 200, 400]}
        with pytest.raises(DatabaseError):  # the copy is read-only too: a write is not silently lost in memory
            with registry.engine.begin() as conn:
                conn.execute(text("DELETE FROM runs"))
    assert snapshot(tmp_path) == before


def test_an_older_postgresql_database_is_refused_naming_the_fix(pg_url):
    engine = make_engine(pg_url)
    try:
        command.upgrade(alembic_config(engine), "0003")
        with pytest.raises(DatabaseError, match="has schema 0003, older than this rnm's .* does not upgrade it"):
            open_registry(pg_url, create=False, read_only=True)
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0003"
    finally:
        engine.dispose()
