"""Opening a registry: URL resolution, SQLite pragmas, schema checks, automatic Alembic upgrades, and the database's
errors turned into the library's own.

SQLite runs in WAL mode with a busy timeout, and every transaction begins with BEGIN IMMEDIATE, so two writers
queue on the lock instead of failing mid-transaction with "database is locked" (litequeue's recipe). Those pragmas
write to the file, so a SQLite file is judged through a read-only connection first: a file that rnm refuses
(another application's, a newer schema) is never written, not even its journal mode.

A command that only reads opens the database `read_only`: through that same kind of connection on SQLite (nothing
is written to the file or its folder, so an archive on a read-only disk reads too), in read-only transactions on
PostgreSQL. Neither is ever migrated; an older SQLite database is read through an upgraded copy in memory.
"""

from __future__ import annotations

import os
import re
import sqlite3
from functools import partial
from importlib import resources
from pathlib import Path
from urllib.parse import quote, quote_plus, urlencode

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, NullPool, StaticPool, create_engine, event, inspect
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from ..errors import DatabaseError, TransientDatabaseError, UsageError

DEFAULT_DB = "rnm.db"
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60
MASK = "***"
SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)
"""A URL query key whose value is a secret (password, sslpassword, PWD, api_key, auth_token...)."""
SECRET_PAIR = re.compile(r"([\w.-]*(?:pass|pwd|secret|token|key|auth|credential)[\w.-]*\s*=\s*)"
                         r"""('[^']*'|"[^"]*"|\{[^}]*\}|[^\s;&'",)]*)""", re.IGNORECASE)
"""A `PWD=...` or `password=...` inside a value (an ODBC connection string, a libpq DSN) or a driver's message."""
URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
SQLITE_ERRORS = {  # SQLite's own texts for what a user can act on, and what waiting may cure
    "attempt to write a readonly database": (DatabaseError, "is read-only; make it writable or give --db a "
                                             "writable copy"),
    "unable to open database file": (DatabaseError, "cannot be opened: SQLite needs its folder to exist and be "
                                     "writable (for the -wal and -shm files); give --db a writable path"),
    "database or disk is full": (TransientDatabaseError, "is on a full disk; free some space and retry"),
    "disk I/O error": (TransientDatabaseError, "had a disk I/O error (a full or failing disk?); free some space or "
                       "check the disk, and retry"),
    "database is locked": (TransientDatabaseError, f"stayed locked by another process for {BUSY_TIMEOUT_S} s; retry "
                           "when it is done"),
}


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
    """The URL with every secret masked (its password, the values of secret-looking query keys, a `PWD=` inside a
    value): the only form that is ever printed or stored."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"
    pairs = [(key, MASK if SECRET_KEY.search(key) else SECRET_PAIR.sub(rf"\1{MASK}", value))
             for key in sorted(parsed.query) for value in _values(parsed.query[key])]
    base = parsed.set(query={}).render_as_string(hide_password=True)
    return f"{base}?{urlencode(pairs, safe='*')}" if pairs else base


def redact(text: str, url: str) -> str:
    """`text` (an error message, a driver's text, which may echo the connection string) with the secrets of `url`
    masked wherever they appear, plain or URL-encoded, and any other `user:password@` or `password=...` in it.

    A secret is masked where it stands alone (after a %XX escape counts), not inside a longer word: a password `b`
    must not garble "bad".
    """
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = re.sub(rf"(?:(?<=%[0-9A-Fa-f]{{2}})|(?<!\w)){re.escape(secret)}(?!\w)", MASK, text)
    return SECRET_PAIR.sub(rf"\1{MASK}", URL_PASSWORD.sub(rf"\1{MASK}@", text))


def _secrets(url: str) -> set[str]:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return set()  # redact's patterns still mask the password of a URL echoed whole
    found = {parsed.password or ""}
    for key, values in parsed.query.items():
        for value in _values(values):
            if SECRET_KEY.search(key):
                found.add(value)
            found.update(match.group(2).strip("'\"{}") for match in SECRET_PAIR.finditer(value))
    found.discard("")
    return found | {quote_plus(s) for s in found} | {quote(s, safe="") for s in found}


def _values(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """A query key's values: SQLAlchemy gives a string, or a tuple when the key is repeated."""
    return (value,) if isinstance(value, str) else value


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


def make_engine(url: str, read_only: bool = False) -> Engine:
    """The one way rnm makes an engine: SQLite's pragmas, and every database error turned into the library's.

    `read_only` is for a server database (a SQLite file is read through _read_only_engine): every transaction is
    READ ONLY, so a write fails in the server instead of changing anything."""
    try:
        if make_url(url).get_backend_name() == "sqlite":
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        else:
            engine = create_engine(url, pool_pre_ping=True,
                                   execution_options={"postgresql_readonly": True} if read_only else {})
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise UsageError(f"cannot use database {safe_url(url)}: {redact(str(error), url)}") from None
    except ImportError as error:
        raise UsageError(f"cannot use database {safe_url(url)}: its driver is missing ({error.name}); for "
                         "PostgreSQL: pip install 'rnmtd3[postgres]'") from None
    event.listen(engine, "handle_error", partial(_translate_error, url))
    return engine


def _sqlite_on_connect(dbapi_connection, connection_record) -> None:  # noqa: ARG001 - event signature
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN IMMEDIATE itself, see make_engine
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _translate_error(url: str, context: ExceptionContext) -> None:
    """Raise the library's own one-line error, naming the fix, for a database error a user can act on.

    Runs for every database error of an engine that rnm made, so no caller sees raw SQL or a driver's text with
    a secret in it. What waiting may cure (a full disk, a lock held too long, a lost or refused server connection)
    is a TransientDatabaseError. Other errors of a statement (a constraint, a bad value) stay SQLAlchemy's, for
    the registry to handle.
    """
    if context.is_pre_ping:  # the pool replaces a dead connection by itself
        return
    error = context.original_exception
    error.args = tuple(redact(arg, url) if isinstance(arg, str) else arg for arg in error.args)  # stays the cause
    text = (str(error).strip().splitlines() or [error.__class__.__name__])[0]
    where = _where(url)
    if isinstance(error, sqlite3.Error):
        for known, (kind, fix) in SQLITE_ERRORS.items():
            if text.startswith(known):
                raise kind(f"database {where} {fix}")
        if isinstance(error, sqlite3.OperationalError) or type(error) is sqlite3.DatabaseError:  # e.g. a corrupt file
            raise DatabaseError(f"database {where}: {text}")
    elif context.is_disconnect:
        raise TransientDatabaseError(f"lost the connection to database {where} ({text}); retry when it is back")
    elif context.connection is None:
        kind = TransientDatabaseError if isinstance(context.sqlalchemy_exception, OperationalError) else DatabaseError
        raise kind(f"cannot connect to database {where}: {text}")
    elif isinstance(context.sqlalchemy_exception, OperationalError):
        raise TransientDatabaseError(f"database {where} failed: {text}; retry later")


def _where(url: str) -> str:
    """How a message names the database: its file, else its URL without secrets."""
    path = sqlite_path(url)
    return str(path) if path is not None else safe_url(url)


def open_engine(db: str | os.PathLike | None, create: bool = True, read_only: bool = False) -> Engine:
    """An engine on a database at the schema head: created when `create` and new, upgraded when older.

    A file that is not SQLite, a database whose tables are not rnm's, or one of a newer schema is refused
    with a DatabaseError and left untouched; so is a SQLite database that rnm could not write. A `read_only` engine
    writes nothing and is refused nothing for being unwritable (see _open_reader).
    """
    if read_only and create:
        raise ValueError("a read-only engine cannot create its database: give create=False")
    url = resolve_url(db)
    path = sqlite_path(url)
    if read_only:
        return _open_reader(url, path)
    if path is not None:
        _check_sqlite_file(url, path, create)
    engine = make_engine(url)
    try:
        current, head = _check_schema(url, engine, create)
        if current != head:
            command.upgrade(alembic_config(engine), "head")
    except BaseException:
        engine.dispose()
        raise
    return engine


def _open_reader(url: str, path: Path | None) -> Engine:
    """A read-only engine on an existing rnm database, refused as open_engine refuses one (foreign, newer).

    An older SQLite database is read through an in-memory copy upgraded to the head (the database's size in memory,
    for one command): an archive of an older rnm reads without being written. An older server database cannot be
    copied, so it is refused, naming the fix.
    """
    if path is not None:
        _has_content(path, create=False)  # refuses a missing, empty or foreign file
    engine = make_engine(url, read_only=True) if path is None else _read_only_engine(url, path)
    try:
        current, head = _check_schema(url, engine, create=False)
        if current != head and path is None:
            raise DatabaseError(f"{_where(url)} has schema {current}, older than this rnm's {head}, and a command that "
                                "only reads does not upgrade it; run a command that writes to it (`rnm queue`, `rnm "
                                "run-workers`) first")
    except BaseException:
        engine.dispose()
        raise
    if current == head:
        return engine
    try:
        return _upgraded_copy(url, engine)
    finally:
        engine.dispose()


def _check_schema(url: str, engine: Engine, create: bool) -> tuple[str | None, str]:
    """The database's Alembic revision and the head, once the database is known to be rnm's and not newer."""
    with engine.connect() as conn:
        # Tables first: a migration commits its tables with its version row, so a table seen here has a revision
        # by the next read. In the other order, a `rnm queue` racing another one's first migration read no revision,
        # then the committed tables, and refused the new database as foreign.
        tables = set(inspect(conn).get_table_names())
        current = MigrationContext.configure(conn).get_current_revision()
    script = ScriptDirectory.from_config(alembic_config(engine))
    if current is None and tables - {"alembic_version"}:
        raise DatabaseError(f"{_where(url)} is not an rnm database (it has tables {', '.join(sorted(tables))}); "
                            "give another --db")
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise DatabaseError(f"{_where(url)} has schema {current}, newer than this rnm knows; upgrade rnm")
    if current is None and not create:
        raise UsageError(f"no rnm database at {_where(url)}; queue runs first or give --db")
    return current, script.get_current_head()


def _check_sqlite_file(url: str, path: Path, create: bool) -> None:
    """Refuse, before any engine with pragmas opens it, a file that is not an rnm database or cannot be written."""
    if create and not path.exists():
        if not path.parent.is_dir():
            raise UsageError(f"cannot create database {path}: folder {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise UsageError(f"cannot create database {path}: folder {path.parent} is not writable")
        return
    if _has_content(path, create):
        reader = _read_only_engine(url, path)
        try:
            _check_schema(url, reader, create)
        finally:
            reader.dispose()
    if not os.access(path, os.W_OK):
        raise DatabaseError(f"database {path} is read-only; make it writable or give --db a writable copy")
    if not os.access(path.parent, os.W_OK):
        raise DatabaseError(f"database {path} is in a read-only folder, where SQLite cannot create its -wal and -shm "
                            "files; make the folder writable or give --db a copy in a writable folder")


def _has_content(path: Path, create: bool) -> bool:
    """True for a SQLite file with content, False for an empty file (a database still to create: left be when
    `create`); a missing file, a folder or another kind of file is refused."""
    if not path.exists():
        raise UsageError(f"no rnm database at {path}; queue runs first or give --db")
    if path.is_dir():
        raise UsageError(f"--db {path} is a folder, not a database file")
    if not path.stat().st_size:
        if not create:
            raise UsageError(f"no rnm database at {path} (the file is empty); queue runs first or give --db")
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise DatabaseError(f"cannot read database {path}: {error.strerror}") from None
    if head != SQLITE_MAGIC:
        raise DatabaseError(f"{path} is not an rnm database (not a SQLite file); give another --db")
    return True


def _read_only_engine(url: str, path: Path) -> Engine:
    """An engine that reads `path` and writes nothing, beside it either (on a read-only disk too).

    `mode=ro` alone still creates -wal and -shm files beside a database in WAL mode (and leaves them), so each
    connection opens the file `immutable` too, unless a -wal file is there already: another connection may then
    hold committed pages in it that only a normal read sees (and that connection has made the -shm file too). An
    immutable read takes no lock, so a writer that starts meanwhile could change pages under it: a transaction that
    saw the file change is refused at its end (see _check_unchanged) instead of returning what it read.
    """
    engine = create_engine(url, creator=partial(_connect_read_only, path), poolclass=NullPool)
    event.listen(engine, "commit", partial(_check_unchanged, url, path))
    event.listen(engine, "handle_error", partial(_translate_error, url))
    return engine


class _ReadOnlyConnection(sqlite3.Connection):
    """A read-only SQLite connection; `stamp` is the file's state when it was opened immutable, else None."""

    stamp: tuple[int, int, int] | None = None


def _connect_read_only(path: Path) -> sqlite3.Connection:
    immutable = not Path(f"{path}-wal").exists()
    stamp = _stamp(path)
    uri = f"{path.as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, factory=_ReadOnlyConnection)
    connection.stamp = stamp if immutable else None
    return connection


def _stamp(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_ino, status.st_size, status.st_mtime_ns


def _check_unchanged(url: str, path: Path, conn) -> None:
    """Refuse what an immutable connection read if the file changed meanwhile (a writer checkpointed into it)."""
    stamp = conn.connection.dbapi_connection.stamp
    if stamp is not None and _stamp(path) != stamp:
        raise TransientDatabaseError(f"database {_where(url)} changed while rnm read it (another rnm wrote to it); "
                                     "retry")


def _upgraded_copy(url: str, reader: Engine) -> Engine:
    """An in-memory copy of the database `reader` reads, upgraded to the schema head and then made read-only."""
    memory = sqlite3.connect(":memory:", check_same_thread=False)
    with reader.begin() as conn:  # its commit checks that the file did not change while it was copied
        conn.connection.dbapi_connection.backup(memory)
    copy = create_engine(url, creator=lambda: memory, poolclass=StaticPool)
    event.listen(copy, "handle_error", partial(_translate_error, url))
    command.upgrade(alembic_config(copy), "head")
    memory.execute("PRAGMA query_only = ON")
    return copy
