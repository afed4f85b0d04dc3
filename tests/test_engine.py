"""Opening a database (rnmtd3.registry.engine): a refused file stays byte-for-byte as it was in every journal mode,
database errors become one line of the library's own that names the fix, and no secret of a URL gets out."""

from __future__ import annotations

import shutil
import sqlite3
import traceback
import types
from contextlib import closing
from urllib.parse import quote_plus

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from rnmtd3.errors import DatabaseError, TransientDatabaseError
from rnmtd3.registry import Registry, open_registry
from rnmtd3.registry import engine as engine_module
from rnmtd3.registry.engine import make_engine, open_engine, redact, safe_url

JOURNAL_MODES = ["delete", "wal", "truncate", "persist"]


@pytest.fixture(scope="module")
def rnm_db(tmp_path_factory):
    """An rnm database at the schema head, made once: tests copy it."""
    path = tmp_path_factory.mktemp("template") / "rnm.db"
    open_registry(path).close()
    return path


def set_journal_mode(path, mode: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0] == mode


def foreign_db(path, mode: str):
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"PRAGMA journal_mode = {mode}")
        conn.execute("CREATE TABLE notes (x TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    return path


def newer_db(path, mode: str, template):
    shutil.copy(template, path)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    set_journal_mode(path, mode)
    return path


def folder_state(folder) -> dict[str, tuple[bytes, int]]:
    """Every file of `folder` with its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


# -- a refused database is not written at all ------------------------------------------------------------------

@pytest.mark.parametrize("create", [True, False], ids=["create", "open"])
@pytest.mark.parametrize("mode", JOURNAL_MODES)
@pytest.mark.parametrize("kind", ["foreign", "newer"])
def test_a_refused_database_is_left_byte_for_byte_and_nothing_is_created_beside_it(kind, mode, create, tmp_path,
                                                                                  rnm_db):
    path = foreign_db(tmp_path / "x.db", mode) if kind == "foreign" else newer_db(tmp_path / "x.db", mode, rnm_db)
    before = folder_state(tmp_path)  # truncate and persist modes keep an empty -journal file
    with pytest.raises(DatabaseError, match="not an rnm database" if kind == "foreign" else "newer"):
        open_engine(path, create=create)
    assert folder_state(tmp_path) == before


def test_a_foreign_database_whose_tables_are_still_in_its_wal_is_refused(tmp_path):
    """Its writer is still open, so its tables are in the -wal file only: a read that ignores the -wal (immutable)
    would take the file for an empty database and make it rnm's."""
    path = tmp_path / "live.db"
    with closing(sqlite3.connect(path)) as writer:
        writer.execute("PRAGMA journal_mode = wal")
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("CREATE TABLE notes (x TEXT)")
        writer.commit()
        before = folder_state(tmp_path)
        assert set(before) == {"live.db", "live.db-wal", "live.db-shm"}
        with pytest.raises(DatabaseError, match="not an rnm database"):
            open_engine(path, create=True)
        after = folder_state(tmp_path)
        assert after.keys() == before.keys()
        assert after["live.db"] == before["live.db"] and after["live.db-wal"] == before["live.db-wal"]


@pytest.mark.parametrize("mode", JOURNAL_MODES)
def test_an_rnm_database_in_any_journal_mode_is_accepted_and_left_in_wal_mode(mode, tmp_path, rnm_db):
    path = tmp_path / "rnm.db"
    shutil.copy(rnm_db, path)
    set_journal_mode(path, mode)
    engine = open_engine(path, create=False)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


# -- database errors become one line that names the fix --------------------------------------------------------

def assert_one_line(error: BaseException, *needles: str) -> None:
    message = str(error)
    assert "\n" not in message and "[SQL" not in message, message
    for needle in needles:
        assert needle in message, message


def test_a_write_to_a_read_only_database_is_a_database_error(tmp_path, rnm_db):
    path = tmp_path / "rnm.db"
    shutil.copy(rnm_db, path)
    engine = open_engine(path)
    with engine.connect() as conn:
        conn.execute(text("PRAGMA query_only = ON"))  # what SQLite answers on a read-only file, without root's pass
        with pytest.raises(DatabaseError) as info:
            conn.execute(text("DELETE FROM runs"))
    engine.dispose()
    assert not isinstance(info.value, TransientDatabaseError)
    assert_one_line(info.value, str(path), "read-only", "--db")


def test_a_full_disk_is_a_transient_database_error(tmp_path, rnm_db):
    path = tmp_path / "rnm.db"
    shutil.copy(rnm_db, path)
    engine = open_engine(path)
    with engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar()
        conn.execute(text(f"PRAGMA max_page_count = {pages}"))  # SQLite's own "database or disk is full"
        with pytest.raises(TransientDatabaseError) as info:
            conn.execute(text("CREATE TABLE filler (x BLOB)"))
            conn.execute(text("INSERT INTO filler VALUES (randomblob(1000000))"))
    engine.dispose()
    assert_one_line(info.value, str(path), "full disk")


def test_a_lock_held_too_long_is_a_transient_database_error(tmp_path, rnm_db, monkeypatch):
    path = tmp_path / "rnm.db"
    shutil.copy(rnm_db, path)
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_S", 0)
    engine = open_engine(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(TransientDatabaseError) as info, engine.connect() as conn:
            conn.execute(text("DELETE FROM runs"))
    engine.dispose()
    assert_one_line(info.value, str(path), "locked")


def test_a_database_whose_folder_is_gone_cannot_be_opened(tmp_path):
    path = tmp_path / "gone" / "rnm.db"
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(DatabaseError) as info, engine.connect():
        pass
    assert_one_line(info.value, str(path), "cannot be opened", "--db")


def test_an_unreachable_server_is_a_transient_error_without_its_secrets():
    pytest.importorskip("psycopg")
    url = "postgresql+psycopg://alice:pw-in-url@127.0.0.1:1/rnm?password=pw-in-query&sslpassword=pw-ssl"
    with pytest.raises(TransientDatabaseError) as info:
        open_engine(url)
    assert_one_line(info.value, "cannot connect", "127.0.0.1:1", "Connection refused")
    everything = "".join(traceback.format_exception(info.value))  # the driver's own error is chained as its cause
    assert "OperationalError" in everything
    for secret in ("pw-in-url", "pw-in-query", "pw-ssl"):
        assert secret not in everything


def test_a_lost_server_connection_is_transient_and_an_idle_one_is_replaced(pg_url):
    engine, admin = open_engine(pg_url), make_engine(pg_url)
    with engine.connect() as conn:
        idle_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with admin.connect() as conn:
        assert conn.execute(text(f"SELECT pg_terminate_backend({idle_pid})")).scalar()
    with engine.connect() as conn:  # the pool's pre-ping finds the pooled connection dead and makes a new one
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != idle_pid
    with pytest.raises(TransientDatabaseError) as info, engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    assert_one_line(info.value, "lost the connection")
    engine.dispose()
    admin.dispose()


def test_a_driver_message_that_echoes_the_connection_string_is_masked_in_the_error_and_its_cause():
    url = "postgresql+psycopg://alice:pw-in-url@db.example/rnm?password=pw-in-query"
    driver_error = RuntimeError('invalid dsn: "host=db.example user=alice password=pw-in-query" (pw-in-url)')
    context = types.SimpleNamespace(is_pre_ping=False, original_exception=driver_error, is_disconnect=False,
                                    connection=None, sqlalchemy_exception=OperationalError(None, None, driver_error))
    with pytest.raises(TransientDatabaseError) as info:
        engine_module._translate_error(url, context)
    for text_out in (str(info.value), str(driver_error)):
        assert "pw-in-url" not in text_out and "pw-in-query" not in text_out, text_out
        assert "user=alice" in text_out


# -- no secret of a URL in what rnm prints or stores -----------------------------------------------------------

URLS_WITH_A_SECRET = {  # each form of a secret in a URL, and the secret as the driver is given it
    "user:password@": ("postgresql+psycopg://alice:S3CRET@db.example:5432/rnm?sslmode=require", "S3CRET"),
    "encoded password": ("postgresql+psycopg://alice:S3%40CRET%2F@db.example:5432/rnm?sslmode=require", "S3@CRET/"),
    "?password=": ("postgresql+psycopg://alice@db.example:5432/rnm?password=S3CRET&sslmode=require", "S3CRET"),
    "?sslpassword=": ("postgresql+psycopg://alice@db.example:5432/rnm?sslpassword=S3CRET&sslmode=require", "S3CRET"),
    "repeated key": ("postgresql+psycopg://alice@db.example:5432/rnm?password=S3CRET&password=S3CRET2&sslmode=require",
                     "S3CRET2"),
    "?auth_token=": ("postgresql+psycopg://alice@db.example:5432/rnm?auth_token=S3CRET&sslmode=require", "S3CRET"),
    "odbc_connect PWD=": ("mssql+pyodbc://alice@db.example:5432/rnm?sslmode=require&odbc_connect="
                          "DRIVER%3D%7BODBC+Driver+18%7D%3BSERVER%3Ddb.example%3BUID%3Dalice%3BPWD%3DS3CRET", "S3CRET"),
    "odbc_connect PWD={...}": ("mssql+pyodbc://alice@db.example:5432/rnm?sslmode=require&odbc_connect="
                               "DRIVER%3D%7BODBC%7D%3BPWD%3D%7BS3CRET%3Bx%7D", "S3CRET;x"),
    "libpq dsn password=": ("postgresql+psycopg://alice@db.example:5432/rnm?sslmode=require&dsn=password%3DS3CRET",
                            "S3CRET"),
}
FORMS = [pytest.param(*case, id=name) for name, case in URLS_WITH_A_SECRET.items()]


@pytest.mark.parametrize(("url", "secret"), FORMS)
def test_safe_url_and_the_registry_url_mask_every_secret_and_keep_the_rest(url, secret):
    shown = safe_url(url)
    for leak in ("S3CRET", secret, quote_plus(secret)):
        assert leak not in shown, shown
    assert "***" in shown and "alice" in shown and "db.example" in shown and "sslmode=require" in shown, shown
    assert Registry(types.SimpleNamespace(url=make_url(url))).url == shown


@pytest.mark.parametrize(("url", "secret"), FORMS)
def test_redact_masks_the_secrets_of_a_url_wherever_a_driver_echoes_them(url, secret):
    echoed = f"could not connect with {url}: bad secret {secret} (as sent: {quote_plus(secret)}; password={secret})"
    masked = redact(echoed, url)
    for leak in ("S3CRET", secret, quote_plus(secret)):
        assert leak not in masked, masked
    assert masked.startswith("could not connect with ") and "db.example" in masked, masked
