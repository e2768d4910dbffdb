"""The journal store: append events with their projection changes, and answer named questions.

Every write goes through `append` (or `claim`, which adds a database-decided
condition), so an event and the projections it changes commit in one
transaction. Callers never write SQL: the questions they ask live here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from agentmail import errors
from agentmail.journal import events as ev
from agentmail.journal import projections as proj
from agentmail.journal import schema
from agentmail.journal import tables as t

SQLITE_BUSY_TIMEOUT_MS = 30_000


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


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN IMMEDIATE below is what runs.
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
        # Writers take the lock up front: a read transaction that later writes could
        # otherwise fail with SQLITE_BUSY instead of waiting for the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _row_event(row: Any) -> ev.Event:
    return ev.Event(kind=row.kind, account=row.account, data=ev.upcast(json.loads(row.data)),
                    message_key=row.message_key, run_id=row.run_id, attempt=row.attempt,
                    seq=row.seq, at=as_utc(row.at))


class Journal:
    """An opened journal. Build it with `Journal.open(url)`; close it when done."""

    def __init__(self, engine: Engine, *, clock: Any = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    @classmethod
    def open(cls, url: str, *, clock: Any = utcnow, upgrade: bool = True) -> Journal:
        url = normalize_url(url)
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            path = Path(url.removeprefix("sqlite:///"))
            schema.check_sqlite_file(path)
            if not path.parent.exists():
                raise errors.JournalError(f"cannot create the journal {path}: "
                                          f"the folder {path.parent} does not exist")
        engine = make_engine(url)
        try:
            schema.prepare(engine, upgrade=upgrade)
        except OperationalError as exc:
            engine.dispose()
            raise errors.JournalError(f"cannot open the journal {url}: {exc.orig}") from exc
        except errors.AgentmailError:
            engine.dispose()
            raise
        return cls(engine, clock=clock)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------

    def _append_in(self, conn: Connection, events: Sequence[ev.Event]) -> list[ev.Event]:
        stored = []
        now = self.clock()
        for e in events:
            at = e.at or now
            key = conn.execute(insert(t.events).values(
                at=at, account=e.account, run_id=e.run_id, message_key=e.message_key,
                kind=e.kind, attempt=e.attempt, data=e.encoded_data())).inserted_primary_key
            assert key is not None  # a single-row INSERT into a table with a primary key
            seq = key[0]
            done = ev.Event(kind=e.kind, account=e.account, data=e.data,
                            message_key=e.message_key, run_id=e.run_id, attempt=e.attempt,
                            seq=seq, at=at)
            proj.apply(conn, done)
            stored.append(done)
        return stored

    def append(self, *events: ev.Event) -> list[ev.Event]:
        """Append events and apply them to the projections, all in one transaction."""
        with self.engine.begin() as conn:
            return self._append_in(conn, events)

    def claim(self, key: str, *, run_id: str, lease_until: datetime,
              data: dict[str, Any] | None = None) -> ev.Event | None:
        """Take a lease on a pending message, or return None if it is not claimable now."""
        claimed = self.claim_many([key], run_id=run_id, lease_until=lease_until, data=data)
        return claimed[0] if claimed else None

    def claim_many(self, keys: Sequence[str], *, run_id: str, lease_until: datetime,
                   data: dict[str, Any] | None = None) -> list[ev.Event]:
        """Take leases on the pending messages among `keys`, in one transaction.

        The conditional UPDATE decides: two processes racing for one message cannot both
        see it succeed, on SQLite (one writer at a time) or PostgreSQL (row lock + re-check).
        """
        now = self.clock()
        m = t.messages
        claimed: list[ev.Event] = []
        with self.engine.begin() as conn:
            for key in keys:
                row = conn.execute(
                    update(m).where(
                        m.c.key == key, m.c.state == proj.PENDING,
                        or_(m.c.next_attempt_at.is_(None), m.c.next_attempt_at <= now),
                    ).values(state=proj.CLAIMED, lease_run_id=run_id,
                             attempts=m.c.attempts + 1)
                    .returning(m.c.account, m.c.attempts)).first()
                if row is None:
                    continue
                event = ev.Event(ev.CLAIMED, row.account, message_key=key, run_id=run_id,
                                 attempt=row.attempts,
                                 data={"lease_until": lease_until.isoformat(), **(data or {})})
                claimed.extend(self._append_in(conn, [event]))
        return claimed

    def start_run(self, account: str, run_id: str, *, host: str, pid: int,
                  is_alive: Any, concurrency: int = 1) -> ev.Event:
        """Register a run for `account`; refuse while another live run holds the mailbox.

        `is_alive(run_row)` tells whether an older 'running' row is still alive (fresh
        heartbeat, process present); a dead one is closed as crashed in the same transaction.
        """
        try:
            with self.engine.begin() as conn:
                prior = conn.execute(select(t.runs).where(t.runs.c.account == account,
                                                          t.runs.c.status == "running")).first()
                stopped: list[ev.Event] = []
                if prior is not None:
                    if is_alive(prior):
                        raise errors.AlreadyRunning(
                            f"{account} is already being processed by run {prior.run_id} "
                            f"(pid {prior.pid} on {prior.host}); stop it first, or wait for "
                            "its heartbeat to lapse if it died")
                    stopped.append(ev.Event(ev.RUN_STOPPED, account, run_id=run_id, data={
                        "stopped_run_id": prior.run_id, "reason": "crashed"}))
                started = ev.Event(ev.RUN_STARTED, account, run_id=run_id,
                                   data={"host": host, "pid": pid,
                                         "concurrency": concurrency})
                return self._append_in(conn, [*stopped, started])[-1]
        except IntegrityError as exc:  # another process registered between our read and write
            raise errors.AlreadyRunning(f"{account} is already being processed by another run"
                                        ) from exc

    # --- rebuilding ------------------------------------------------------------------------

    def iter_events(self, *, after: int = 0, batch: int = 5000,
                    conn: Connection | None = None) -> Iterator[ev.Event]:
        """Every event in order, read in batches so memory stays flat."""
        while True:
            query = (select(t.events).where(t.events.c.seq > after).order_by(t.events.c.seq)
                     .limit(batch))
            if conn is None:
                with self.engine.connect() as c:
                    rows = c.execute(query).all()
            else:
                rows = conn.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield _row_event(row)
            after = rows[-1].seq

    def rebuild(self) -> int:
        """Recompute every projection from the events; returns how many events were replayed."""
        count = 0
        with self.engine.begin() as conn:
            proj.clear(conn)
            for e in self.iter_events(conn=conn):
                proj.apply(conn, e)
                count += 1
        return count

    # --- named questions -------------------------------------------------------------------

    def _all(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def events_of_message(self, key: str) -> list[ev.Event]:
        """The journal steps of one message, including sends filed under it."""
        return [_row_event(r) for r in self._all(
            select(t.events).where(t.events.c.message_key == key).order_by(t.events.c.seq))]

    def events_since(self, seq: int = 0, *, limit: int | None = None,
                     keys: Sequence[str] | None = None) -> list[ev.Event]:
        query = select(t.events).where(t.events.c.seq > seq).order_by(t.events.c.seq)
        if keys is not None:
            query = query.where(t.events.c.message_key.in_(list(keys)))
        if limit is not None:
            query = query.limit(limit)
        return [_row_event(r) for r in self._all(query)]

    def message(self, key: str) -> Any | None:
        rows = self._all(select(t.messages).where(t.messages.c.key == key))
        return rows[0] if rows else None

    def known_provider_ids(self, account: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        return set(self._all_scalars(select(t.messages.c.provider_id).where(
            t.messages.c.account == account, t.messages.c.provider_id.in_(list(ids)))))

    def _all_scalars(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars().all())

    def claimable(self, account: str, *, limit: int = 100) -> list[Any]:
        """Pending messages whose backoff has passed, oldest first."""
        m = t.messages
        now = self.clock()
        return self._all(select(m).where(
            m.c.account == account, m.c.state == proj.PENDING,
            or_(m.c.next_attempt_at.is_(None), m.c.next_attempt_at <= now),
        ).order_by(m.c.first_seq).limit(limit))

    def next_retry_at(self, account: str) -> datetime | None:
        m = t.messages
        return as_utc(self._all(select(func.min(m.c.next_attempt_at)).where(
            m.c.account == account, m.c.state == proj.PENDING))[0][0])

    def in_flight(self, account: str | None = None) -> list[Any]:
        """Messages claimed or processed and not yet acked, released or dead-lettered."""
        m = t.messages
        query = select(m).where(m.c.state.in_(proj.IN_FLIGHT_STATES)).order_by(m.c.first_seq)
        if account is not None:
            query = query.where(m.c.account == account)
        return self._all(query)

    def unsent_outbox(self, source_key: str) -> list[Any]:
        o = t.outbox
        return self._all(select(o).where(o.c.source_key == source_key, o.c.state == "queued")
                         .order_by(o.c.position))

    def outbox_of(self, source_key: str) -> list[Any]:
        o = t.outbox
        return self._all(select(o).where(o.c.source_key == source_key).order_by(o.c.position))

    def failed_since(self, since: datetime | None = None, *,
                     account: str | None = None) -> list[Any]:
        """Dead-lettered messages, newest change last."""
        m = t.messages
        query = select(m).where(m.c.state == proj.DEAD_LETTERED).order_by(m.c.last_seq)
        if since is not None:
            query = query.where(m.c.updated_at >= since)
        if account is not None:
            query = query.where(m.c.account == account)
        return self._all(query)

    def account(self, address: str) -> Any | None:
        rows = self._all(select(t.accounts).where(t.accounts.c.address == address))
        return rows[0] if rows else None

    def accounts(self) -> list[Any]:
        return self._all(select(t.accounts).order_by(t.accounts.c.address))

    def live_run(self, account: str) -> Any | None:
        rows = self._all(select(t.runs).where(t.runs.c.account == account,
                                              t.runs.c.status == "running"))
        return rows[0] if rows else None

    def last_run(self, account: str) -> Any | None:
        rows = self._all(select(t.runs).where(t.runs.c.account == account)
                         .order_by(t.runs.c.started_at.desc()).limit(1))
        return rows[0] if rows else None

    def state_counts(self, account: str) -> dict[str, int]:
        m = t.messages
        return {state: n for state, n in self._all(
            select(m.c.state, func.count()).where(m.c.account == account, m.c.direction == "in")
            .group_by(m.c.state))}

    def replies_in_conversation(self, account: str, conversation_id: str) -> int:
        m = t.messages
        return self._all(select(func.count()).where(
            m.c.account == account, m.c.conversation_id == conversation_id,
            m.c.direction == "out"))[0][0]

    def conversation_of_ids(self, rfc_message_ids: Sequence[str]) -> str | None:
        """The conversation any of these RFC Message-IDs already belongs to, if one does."""
        ids = [i for i in rfc_message_ids if i]
        if not ids:
            return None
        r = t.message_refs
        found = self._all_scalars(select(r.c.conversation_id).where(r.c.rfc_message_id.in_(ids))
                                  .limit(1))
        return found[0] if found else None

    def sent_message_source(self, account: str, rfc_message_id: str) -> str | None:
        """The key a message this account sent is filed under, found by its RFC Message-ID.

        A handler's reply or request is filed under the message whose handling produced it
        (its outbox row says which); a request from `agentmail send` under its own key.
        """
        o, m = t.outbox, t.messages
        rows = self._all_scalars(select(o.c.source_key).where(
            o.c.account == account, o.c.rfc_message_id == rfc_message_id).limit(1))
        if rows:
            return rows[0]
        rows = self._all_scalars(select(m.c.key).where(
            m.c.account == account, m.c.direction == "out",
            m.c.rfc_message_id == rfc_message_id).order_by(m.c.first_seq).limit(1))
        return rows[0] if rows else None

    def rejected_with_queued_outbox(self, account: str) -> list[str]:
        """Keys of rejected messages whose error reply is journaled but not yet sent."""
        o, m = t.outbox, t.messages
        return self._all_scalars(
            select(o.c.source_key).distinct().join(m, m.c.key == o.c.source_key).where(
                o.c.account == account, o.c.state == "queued", m.c.state == proj.REJECTED))

    def event_count(self) -> int:
        return self._all(select(func.count()).select_from(t.events))[0][0]

    def conversation(self, conversation_id: str) -> Any | None:
        rows = self._all(select(t.conversations).where(t.conversations.c.id == conversation_id))
        return rows[0] if rows else None

    def conversation_messages(self, conversation_id: str) -> list[Any]:
        """Every copy of every message in a conversation, in journal order."""
        m = t.messages
        return self._all(select(m).where(m.c.conversation_id == conversation_id)
                         .order_by(m.c.first_seq))

    def run_concurrency(self, run_id: str) -> int | None:
        """How many handler workers a run had, as its `run_started` event says."""
        e = t.events
        rows = self._all(select(e.c.data).where(e.c.run_id == run_id, e.c.kind == ev.RUN_STARTED)
                         .limit(1))
        return json.loads(rows[0][0]).get("concurrency") if rows else None

    def run(self, run_id: str) -> Any | None:
        rows = self._all(select(t.runs).where(t.runs.c.run_id == run_id))
        return rows[0] if rows else None

    # --- recovery, replay and status -------------------------------------------------------

    def received_matching(self, ident: str, *, account: str | None = None) -> list[Any]:
        """Received messages named by a provider id, a message key or an RFC Message-ID
        (with or without <>), oldest first; one per mailbox that received it."""
        m = t.messages
        bare = ident.strip().removeprefix("<").removesuffix(">")
        forms = list(dict.fromkeys([ident.strip(), f"<{bare}>", bare]))
        query = select(m).where(m.c.direction == "in", or_(
            m.c.provider_id == ident, m.c.key == ident, m.c.rfc_message_id.in_(forms)))
        if account is not None:
            query = query.where(m.c.account == account)
        return self._all(query.order_by(m.c.first_seq))

    def message_counts(self, account: str) -> dict[str, int]:
        """Received messages of `account` by status: pending (never tried), failed (waiting
        to retry after a failed attempt), in_flight, acked, dead_lettered, rejected."""
        m = t.messages
        counts = dict.fromkeys(("pending", "failed", "in_flight", "acked", "dead_lettered",
                                "rejected"), 0)
        for state, tried, n in self._all(
                select(m.c.state, m.c.attempts > 0, func.count())
                .where(m.c.account == account, m.c.direction == "in")
                .group_by(m.c.state, m.c.attempts > 0)):
            if state == proj.PENDING:
                counts["failed" if tried else "pending"] += n
            elif state in proj.IN_FLIGHT_STATES:
                counts["in_flight"] += n
            else:
                counts[state] = counts.get(state, 0) + n
        return counts

    def oldest_pending_since(self, account: str) -> datetime | None:
        """When the longest-waiting pending message of `account` was fetched."""
        m, e = t.messages, t.events
        return as_utc(self._all(select(func.min(e.c.at)).select_from(
            m.join(e, e.c.seq == m.c.first_seq)).where(
            m.c.account == account, m.c.direction == "in", m.c.state == proj.PENDING))[0][0])

    def last_failure(self, account: str) -> ev.Event | None:
        """The most recent `failed` event of `account`."""
        e = t.events
        rows = self._all(select(e).where(e.c.account == account, e.c.kind == ev.FAILED)
                         .order_by(e.c.seq.desc()).limit(1))
        return _row_event(rows[0]) if rows else None
