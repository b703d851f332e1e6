"""One SQLAlchemy engine per database URL, shared by the warrant store and the audit trail.

Why one module: warrants and their audit entries must be written in the *same* transaction
(a warrant approved without its audit entry, or the reverse, is an accountability hole), so
both need the same engine, the same declarative ``Base`` and the same session factory.

Default database: ``sqlite:///<LAWTAP_HOME>/lawtap.db`` where ``LAWTAP_HOME`` defaults to
``~/.lawtap``; ``LAWTAP_DB_URL`` overrides it (``postgresql+psycopg://...`` works the same:
the models use only portable column types and the ORM, no SQLite-only SQL).

SQLite specifics, applied only to SQLite engines: every transaction starts with
``BEGIN IMMEDIATE`` so writers are serialised by the database itself (the audit chain reads
"last entry" and appends; two writers must not both append after the same entry), foreign
keys are switched on, and a busy timeout lets a second process wait instead of failing.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

from lawtap.errors import LawtapError

__all__ = [
    "Base",
    "default_url",
    "dispose_engines",
    "from_db_time",
    "get_engine",
    "is_memory_url",
    "lawtap_home",
    "session_scope",
    "to_db_time",
    "url_identity",
]

SQLITE_BUSY_TIMEOUT_S = 30.0


class Base(DeclarativeBase):
    """Declarative base of every lawtap interception table (warrants, targets, audit)."""



def lawtap_home() -> Path:
    """``$LAWTAP_HOME`` or ``~/.lawtap``: holds the default database, audit key and anchor."""
    env = os.environ.get("LAWTAP_HOME")
    return Path(env).expanduser() if env else Path.home() / ".lawtap"


def default_url() -> str:
    """``$LAWTAP_DB_URL`` or the SQLite file in :func:`lawtap_home`."""
    env = os.environ.get("LAWTAP_DB_URL")
    if env:
        return env
    return f"sqlite:///{lawtap_home() / 'lawtap.db'}"


_ENGINES: dict[str, Engine] = {}
_SQLITE_READY: weakref.WeakSet[Engine] = weakref.WeakSet()
_LOCK = threading.Lock()


def _is_sqlite_file(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
        and not str(url.database).startswith("file::memory:")


def _sqlite_setup(engine: Engine) -> None:
    """Take over pysqlite's transaction handling so BEGIN IMMEDIATE and SAVEPOINT work."""

    _SQLITE_READY.add(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine(target: str | URL | Engine | None = None) -> Engine:
    """The engine for ``target`` (URL, engine, or None for :func:`default_url`), schema created.

    Engines are cached per URL so the warrant store and the audit log of one process share a
    connection pool. The parent directory of a SQLite file is created on first use.
    """
    if isinstance(target, Engine):
        if target.dialect.name == "sqlite" and target not in _SQLITE_READY:
            _sqlite_setup(target)
            target.dispose()  # connections made before the hooks must not be reused
        _ensure_schema(target)
        return target
    raw = default_url() if target is None else target
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as e:
        raise LawtapError(f"invalid database URL {str(raw)!r}: {e}") from None
    key = url.render_as_string(hide_password=False)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            return engine
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
            if _is_sqlite_file(url):
                Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
            else:
                kwargs["poolclass"] = StaticPool  # one in-memory database per URL and process
        try:
            engine = create_engine(url, **kwargs)
        except (ArgumentError, ImportError, SQLAlchemyError) as e:
            raise LawtapError(f"cannot open database {url.render_as_string(hide_password=True)}: {e}") from None
        if url.get_backend_name() == "sqlite":
            _sqlite_setup(engine)
        _ensure_schema(engine)
        _ENGINES[key] = engine
        return engine


_SCHEMA_DONE: weakref.WeakSet[Engine] = weakref.WeakSet()


def _ensure_schema(engine: Engine) -> None:
    """Create the interception tables if missing (no migrations yet: the schema is version 1)."""
    if engine in _SCHEMA_DONE:
        return
    # The table modules register themselves on Base when imported; import them here so any
    # entry point (store, audit log, CLI) gets the whole schema.
    from lawtap.intercept import audit as _audit  # noqa: F401
    from lawtap.intercept import warrants as _warrants  # noqa: F401

    try:
        Base.metadata.create_all(engine)
    except SQLAlchemyError as e:
        raise LawtapError(f"cannot create tables in {url_identity(engine.url)}: {_one_line(e)}") from None
    _SCHEMA_DONE.add(engine)


def dispose_engines() -> None:
    """Close every cached engine (tests, and processes that fork)."""
    with _LOCK:
        for engine in _ENGINES.values():
            _SCHEMA_DONE.discard(engine)
            engine.dispose()
        _ENGINES.clear()


@contextmanager
def session_scope(target: str | URL | Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception.

    Database errors become a :class:`LawtapError` with one line; lawtap errors pass through.
    """
    engine = get_engine(target)
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except LawtapError:
        session.rollback()
        raise
    except SQLAlchemyError as e:
        session.rollback()
        raise LawtapError(f"database error ({url_identity(engine.url)}): {_one_line(e)}") from None
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def url_identity(url: URL | str) -> str:
    """A stable, password-free name of a database: absolute path for SQLite files.

    The audit anchor is filed under this name, so the same database reached through a
    relative and an absolute path is still recognised.
    """
    u = make_url(url) if isinstance(url, str) else url
    if _is_sqlite_file(u):
        return "sqlite:///" + str(Path(str(u.database)).expanduser().resolve())
    return u.render_as_string(hide_password=True)


def is_memory_url(url: URL | str) -> bool:
    """True for a private in-memory SQLite database (nothing outlives the process)."""
    u = make_url(url) if isinstance(url, str) else url
    return u.get_backend_name() == "sqlite" and not _is_sqlite_file(u)


def to_db_time(dt: datetime) -> datetime:
    """Aware datetime -> naive UTC, the portable way to store instants (SQLite and PostgreSQL)."""
    if dt.tzinfo is None:
        raise LawtapError(f"time {dt.isoformat()} has no time zone; lawtap stores UTC instants only")
    return dt.astimezone(timezone.utc).replace(tzinfo=None)


def from_db_time(dt: datetime | None) -> datetime | None:
    """Naive UTC from the database -> aware UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _one_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e)
    return text.splitlines()[0] if text else type(e).__name__
