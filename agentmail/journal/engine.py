"""Database engines for the journal, and the two kinds of transaction it runs.

Writes and reads are told apart on purpose:

- a **write** transaction serialises with every other writer of the journal: SQLite's
  ``BEGIN IMMEDIATE`` (the one write lock of the file), PostgreSQL's transaction-scoped
  advisory lock ``JOURNAL_LOCK``. So events commit in ``seq`` order (a follower reading
  "events after N" never misses one that commits late with a lower seq), and projection
  updates never race (no duplicate-key or deadlock between two appenders).
- a **read** transaction takes no lock: SQLite's deferred ``BEGIN`` reads a WAL snapshot
  and never waits for a writer; PostgreSQL reads are plain READ COMMITTED.

Database errors leave this module translated (see :func:`translated`): the pipeline and
services never see an SQLAlchemy exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, overload

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from agentmail import errors

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: pg_advisory_xact_lock key every journal writer takes ("agentmail" in ASCII, truncated)
JOURNAL_LOCK = 0x6167656E746D61
#: pg_advisory_lock key held while the schema is checked and upgraded
MIGRATION_LOCK = JOURNAL_LOCK + 1
WRITE_OPTION = "agentmail_write"
BUSY_RETRIES = 5  # a transaction that hit a transient database error is run again this often

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@overload
def as_utc(value: datetime) -> datetime: ...


@overload
def as_utc(value: None) -> None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(
        timezone.utc)


def normalize_url(db: str) -> str:
    """Accept a plain path for SQLite as well as a SQLAlchemy URL."""
    return db if "://" in db else f"sqlite:///{Path(db).expanduser()}"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so the BEGIN below is what runs.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives any process crash; only a power loss can drop the
            # last commits, never corrupt the file.
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the file's write lock up front (a read that later writes could fail
        # with SQLITE_BUSY instead of waiting); readers take a snapshot and wait for nobody.
        write = conn.get_execution_options().get(WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One serialised write transaction: committed on success, rolled back on error."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if not is_sqlite(engine):
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": JOURNAL_LOCK})
            yield conn


def database_now(engine: Engine) -> datetime:
    """The database server's clock, in UTC: leases are measured against it, not ours."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            value = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar()
            return datetime.fromisoformat(str(value)).replace(tzinfo=timezone.utc)
        value = conn.execute(text("SELECT clock_timestamp()")).scalar()
        assert isinstance(value, datetime)
        return as_utc(value)


class DatabaseClock:
    """Wall time on the database's clock, without a round trip per reading.

    Every host that shares a journal measures leases on one clock, so skew between hosts
    cannot make a live run look dead. The offset to the local clock is measured on open
    and again by `resync` (each heartbeat), which bounds drift to one heartbeat period.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.offset = 0.0
        self.resync()

    def resync(self) -> None:
        before = time.time()
        db = database_now(self.engine).timestamp()
        after = time.time()
        self.offset = db - (before + after) / 2

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.offset, timezone.utc)


_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open")


def _transient(exc: DBAPIError) -> bool:
    """Errors a second try can get past: lost connections, lock timeouts, serialisation."""
    if exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError) and type(exc.orig).__module__.startswith("sqlite3"):
        return any(word in str(exc.orig).lower() for word in _SQLITE_TRANSIENT)
    if isinstance(exc, OperationalError):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return bool(code) and str(code)[:2] in ("40", "08", "53", "57")  # rollback, connection, resources


def translated(work: Callable[[], T], *, what: str = "journal write",
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `work` (a whole transaction), retrying transient database errors a few times.

    What still fails leaves as an agentmail error: `JournalBusy` (retry later: the run
    pauses and rides it out), `JournalConflict` (a constraint of one write: the caller
    quarantines that message). Agentmail errors raised inside (`LeaseLost`) pass through.
    """
    for attempt in range(BUSY_RETRIES):
        try:
            return work()
        except IntegrityError as exc:
            raise errors.JournalConflict(f"{what} refused by the journal: {exc.orig}") from exc
        except DBAPIError as exc:
            if not _transient(exc):
                raise errors.JournalBusy(f"{what} failed: {exc.orig}") from exc
            if attempt + 1 == BUSY_RETRIES:
                raise errors.JournalBusy(
                    f"the journal is unavailable ({exc.orig}); retrying later") from exc
            sleep(min(2.0, 0.05 * 2 ** attempt))
    raise AssertionError("unreachable")  # pragma: no cover
