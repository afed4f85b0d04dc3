"""Opening a registry: URL resolution, SQLite pragmas, schema checks and automatic Alembic upgrades.

SQLite runs in WAL mode with a busy timeout, and every transaction begins with BEGIN IMMEDIATE, so two writers
queue on the lock instead of failing mid-transaction with "database is locked" (litequeue's recipe).
"""

from __future__ import annotations

import os
import sqlite3
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from ..errors import DatabaseError, UsageError

DEFAULT_DB = "rnm.db"
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60


def resolve_url(db: str | os.PathLike | None) -> str:
    """`--db`, else $RNM_DB, else ./rnm.db; a plain path becomes a SQLite URL."""
    raw = str(db) if db else os.environ.get("RNM_DB") or DEFAULT_DB
    if "://" in raw:
        try:
            make_url(raw)
        except (ArgumentError, ValueError):
            raise UsageError(f"bad database URL {safe_url(raw)!r}") from None
        return raw
    return f"sqlite:///{Path(raw).expanduser().absolute()}"


def safe_url(url: str) -> str:
    """The URL with its password masked: the only form that is ever printed or stored."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def database_exists(db: str | os.PathLike | None) -> bool:
    """False only for a SQLite file that is not there yet (a server database is assumed to exist)."""
    path = sqlite_path(resolve_url(db))
    return path is None or path.exists()


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("rnmtd3.migrations")))
    config.attributes["engine"] = engine
    return config


def make_engine(url: str) -> Engine:
    try:
        if make_url(url).get_backend_name() == "sqlite":
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise UsageError(f"cannot use database {safe_url(url)}: {exc}") from None
    except ImportError as exc:
        raise UsageError(f"cannot use database {safe_url(url)}: its driver is missing ({exc.name}); for "
                         "PostgreSQL: pip install 'rnmtd3[postgres]'") from None


def _sqlite_on_connect(dbapi_connection, connection_record) -> None:  # noqa: ARG001 - event signature
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN IMMEDIATE itself, see make_engine
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def open_engine(db: str | os.PathLike | None, create: bool = True) -> Engine:
    """An engine on a database at the schema head: created when `create` and new, upgraded when older.

    A file that is not SQLite, a database whose tables are not rnm's, or one of a newer schema is refused
    with a DatabaseError and left untouched.
    """
    url = resolve_url(db)
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_file(path, create)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            tables = set(inspect(conn).get_table_names())
    except DBAPIError as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open database {safe_url(url)}: {str(exc.orig).splitlines()[0]}") from None
    config = alembic_config(engine)
    script = ScriptDirectory.from_config(config)
    if current is None and tables - {"alembic_version"}:
        engine.dispose()
        raise DatabaseError(f"{safe_url(url)} is not an rnm database (it has tables {', '.join(sorted(tables))}); "
                            "give another --db")
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        engine.dispose()
        raise DatabaseError(f"{safe_url(url)} has schema {current}, newer than this rnm knows; upgrade rnm")
    if current != script.get_current_head():
        if current is None and not create:
            engine.dispose()
            raise UsageError(f"no rnm database at {safe_url(url)}; queue runs first or give --db")
        command.upgrade(config, "head")
    return engine


def _check_sqlite_file(path: Path, create: bool) -> None:
    if not path.exists():
        if not create:
            raise UsageError(f"no rnm database at {path}; queue runs first or give --db")
        if not path.parent.is_dir():
            raise UsageError(f"cannot create database {path}: folder {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise UsageError(f"cannot create database {path}: folder {path.parent} is not writable")
        return
    if path.is_dir():
        raise UsageError(f"--db {path} is a folder, not a database file")
    if path.stat().st_size == 0 and not create:  # an empty file is a database still to create: leave it be
        raise UsageError(f"no rnm database at {path} (the file is empty); queue runs first or give --db")
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise DatabaseError(f"cannot read database {path}: {exc.strerror}") from None
    if head and head != SQLITE_MAGIC:
        raise DatabaseError(f"{path} is not an rnm database (not a SQLite file); give another --db")
    if head:
        _check_sqlite_tables(path)


def _check_sqlite_tables(path: Path) -> None:
    """Refuse a foreign SQLite file through a read-only connection, before any pragma can touch its header."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read database {path}: {exc}") from None
    if tables and "alembic_version" not in tables:
        raise DatabaseError(f"{path} is not an rnm database (it has tables {', '.join(sorted(tables))}); "
                            "give another --db")
