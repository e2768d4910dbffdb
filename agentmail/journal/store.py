"""The journal store: append events with their projection changes, take and keep claims.

Every write goes through `append` (or `claim_many` / `take_over`, which decide a claim
under the same write lock), so an event and the projections it changes commit in one
serialised transaction (`journal.engine.write_transaction`). Appends are checked: a state
change the lifecycle forbids, or one naming a claim token that is no longer current,
raises `errors.LeaseLost` and commits nothing. Reads live in `journal.queries`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, select, update
from sqlalchemy.exc import OperationalError

from agentmail import errors, lifecycle
from agentmail.journal import bodies as bodies_mod
from agentmail.journal import events as ev
from agentmail.journal import port, schema
from agentmail.journal import projections as proj
from agentmail.journal import tables as t
from agentmail.journal.engine import (  # noqa: F401  (as_utc, utcnow: re-exported)
    DatabaseClock,
    as_utc,
    make_engine,
    normalize_url,
    translated,
    utcnow,
    write_transaction,
)
from agentmail.journal.queries import JournalQueries, row_event

# A hook for tests: called with each event inside the append transaction, before it is
# written; raising there fails that append exactly as a database error would.
AppendHook = Callable[[ev.Event], None]


class Journal(JournalQueries):
    """An opened journal. Build it with `Journal.open(url)`; close it when done.

    `clock` is the database's clock unless a test injects one.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock: Callable[[], datetime] = clock or DatabaseClock(engine)
        self.append_hook: AppendHook | None = None

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], datetime] | None = None,
             upgrade: bool = True) -> Journal:
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
            return cls(engine, clock=clock)
        except OperationalError as exc:
            engine.dispose()
            raise errors.JournalError(f"cannot open the journal {url}: {exc.orig}") from exc
        except errors.AgentmailError:
            engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------

    def _with_new_owner(self, conn: Connection, e: ev.Event) -> ev.Event:
        """Give an event that changes a message's owner the next token (under the lock)."""
        rule = lifecycle.TRANSITIONS.get(e.kind)
        if rule is None or not rule.new_owner or not e.message_key or "new_token" in e.data:
            return e
        if e.kind == ev.RECONCILED and not e.data.get("lease_until"):
            return e
        current = conn.execute(select(t.messages.c.lease_token)
                               .where(t.messages.c.key == e.message_key)).scalar()
        if current is None:
            return e
        return dataclasses.replace(e, data={**e.data, "new_token": current + 1})

    def _append_in(self, conn: Connection, events: Sequence[ev.Event]) -> list[ev.Event]:
        stored = []
        now = self.clock()
        for e in events:
            e = self._with_new_owner(conn, e)
            if self.append_hook is not None:
                self.append_hook(e)
            at = e.at or now
            key = conn.execute(insert(t.events).values(
                at=at, account=e.account, run_id=e.run_id, message_key=e.message_key,
                kind=e.kind, attempt=e.attempt, data=e.encoded_data())).inserted_primary_key
            assert key is not None  # a single-row INSERT into a table with a primary key
            done = dataclasses.replace(e, seq=key[0], at=at)
            proj.apply(conn, done, strict=True)
            stored.append(done)
        return stored

    def append(self, *events: ev.Event,
               bodies: Sequence[bodies_mod.Body] = ()) -> list[ev.Event]:
        """Append events and apply them to the projections, all in one transaction, with
        the bodies of the messages they fetch (kept beside the log, see `bodies`)."""
        def work() -> list[ev.Event]:
            with write_transaction(self.engine) as conn:
                stored = self._append_in(conn, events)
                bodies_mod.store(conn, bodies, self.clock())
                return stored
        return translated(work, what=f"journaling {events[0].kind}" if events else "append")

    def body(self, key: str) -> bytes | None:
        """The raw bytes of received message `key`; None when none is kept (a rejected
        message's, or one `compact` deleted)."""
        with self.engine.connect() as conn:
            return bodies_mod.read(conn, key)

    def compact(self, *, retention: timedelta,
                include_dead_lettered: bool = False) -> bodies_mod.CompactReport:
        """Delete the bodies of messages finished more than `retention` ago."""
        def work() -> bodies_mod.CompactReport:
            with write_transaction(self.engine) as conn:
                return bodies_mod.compact(conn, now=self.clock(), retention=retention,
                                          include_dead_lettered=include_dead_lettered)
        return translated(work, what="compacting the journal")

    # --- claims ----------------------------------------------------------------------------

    def claim_many(self, keys: Sequence[str], *, run_id: str, lease_seconds: float,
                   data: dict[str, Any] | None = None) -> list[port.Claim]:
        """Take leases on the claimable messages among `keys`, in one transaction.

        Decided under the journal's write lock, so two processes racing for one message
        cannot both win; each winner gets the message's next fencing token and a deadline
        of `lease_seconds` on the database's clock.
        """
        def work() -> list[port.Claim]:
            now = self.clock()
            until = now + timedelta(seconds=lease_seconds)
            m = t.messages
            with write_transaction(self.engine) as conn:
                rows = conn.execute(select(m.c.key, m.c.account, m.c.provider_id,
                                           m.c.conversation_id, m.c.attempts, m.c.lease_token)
                                    .where(m.c.key.in_(list(keys)), m.c.state == proj.PENDING,
                                           or_(m.c.next_attempt_at.is_(None),
                                               m.c.next_attempt_at <= now))).all()
                by_key = {r.key: r for r in rows}
                claims = []
                for key in keys:  # in the caller's order: it is the order handlers start
                    r = by_key.get(key)
                    if r is None:
                        continue
                    token = r.lease_token + 1
                    self._append_in(conn, [ev.Event(
                        ev.CLAIMED, r.account, message_key=key, run_id=run_id,
                        attempt=r.attempts + 1, data={"lease_until": until.isoformat(),
                                                      "new_token": token, **(data or {})})])
                    claims.append(port.Claim(key, r.account, r.provider_id, r.conversation_id,
                                             r.attempts + 1, token, run_id, until))
                return claims
        return translated(work, what="claiming messages")

    def claim(self, key: str, *, run_id: str, lease_seconds: float,
              data: dict[str, Any] | None = None) -> port.Claim | None:
        """Take a lease on one pending message, or return None if it is not claimable now."""
        claims = self.claim_many([key], run_id=run_id, lease_seconds=lease_seconds, data=data)
        return claims[0] if claims else None

    def take_over(self, row: port.MessageRow, *, run_id: str, lease_seconds: float,
                  **data: Any) -> port.Claim:
        """Recovery takes a dead holder's claim (journaled `reconciled`) before repairing it.

        Compare-and-set on the token `row` was read with: raises LeaseLost when another
        run took the message in the meantime.
        """
        until = self.clock() + timedelta(seconds=lease_seconds)
        event = ev.Event(ev.RECONCILED, row.account, message_key=row.key, run_id=run_id,
                         data={**data, "token": row.lease_token,
                               "new_token": row.lease_token + 1,
                               "lease_until": until.isoformat()})
        self.append(event)
        return port.Claim(row.key, row.account, row.provider_id, row.conversation_id,
                          row.attempts, row.lease_token + 1, run_id, until)

    def renew(self, claim: port.Claim, lease_seconds: float) -> port.Claim:
        """Extend a claim's lease, proving it is still ours (raises LeaseLost otherwise).

        The send path calls it immediately before each send: a run that stalled past its
        lease learns here that another run owns the message, before mailing anything.
        """
        until = self.clock() + timedelta(seconds=lease_seconds)
        m = t.messages

        def work() -> int:
            with write_transaction(self.engine) as conn:
                return int(conn.execute(update(m).where(
                    m.c.key == claim.key, m.c.lease_token == claim.token,
                    m.c.lease_run_id == claim.run_id, m.c.state.in_(proj.IN_FLIGHT_STATES),
                ).values(lease_expires_at=until)).rowcount)
        if not translated(work, what="renewing a lease"):
            raise errors.LeaseLost(key=claim.key, kind="send")
        return dataclasses.replace(claim, lease_until=until)

    def mark_started(self, claim: port.Claim, *, running: bool = True) -> None:
        """Note that the claim's handler starts now, or (`running=False`) has returned: a
        mutable mark, not an event. A crashed claim still marked was inside its handler."""
        m = t.messages

        def work() -> None:
            with write_transaction(self.engine) as conn:
                conn.execute(update(m).where(m.c.key == claim.key,
                                             m.c.lease_token == claim.token)
                             .values(handler_started_at=self.clock() if running else None))
        translated(work, what="marking a handler start")

    # --- runs ------------------------------------------------------------------------------

    def start_run(self, account: str, run_id: str, *, host: str, pid: int,
                  is_alive: Callable[[port.RunRow], bool], lease_seconds: float = 300.0,
                  concurrency: int = 1, data: dict[str, Any] | None = None,
                  **more: Any) -> ev.Event:
        """Register a run for `account`; refuse while another live run holds the mailbox.

        `is_alive(run_row)` tells whether an older 'running' row is still alive (lease
        unexpired on the database clock, process present); a dead one is closed as crashed
        in the same transaction.
        """
        def work() -> ev.Event:
            with write_transaction(self.engine) as conn:
                prior = conn.execute(select(t.runs).where(t.runs.c.account == account,
                                                          t.runs.c.status == "running")).first()
                stopped: list[ev.Event] = []
                if prior is not None:
                    row = port.from_mapping(port.RunRow, prior._mapping)
                    if is_alive(row):
                        raise errors.AlreadyRunning(
                            f"{account} is already being processed by run {row.run_id} "
                            f"(pid {row.pid} on {row.host}); stop it first, or wait for "
                            "its lease to lapse if it died")
                    stopped.append(ev.Event(ev.RUN_STOPPED, account, run_id=run_id, data={
                        "stopped_run_id": row.run_id, "reason": "crashed"}))
                expires = self.clock() + timedelta(seconds=lease_seconds)
                started = ev.Event(ev.RUN_STARTED, account, run_id=run_id, data={
                    **(data or {}), **more, "host": host, "pid": pid,
                    "concurrency": concurrency, "lease_seconds": lease_seconds,
                    "expires_at": expires.isoformat()})
                return self._append_in(conn, [*stopped, started])[-1]
        try:
            return translated(work, what="registering the run")
        except errors.JournalConflict as exc:  # another process registered at the same time
            raise errors.AlreadyRunning(f"{account} is already being processed by another run"
                                        ) from exc

    def heartbeat(self, run_id: str, *, lease_seconds: float, progressed: bool,
                  extend_claims: bool = True) -> bool:
        """Keep a run alive: its row and the leases of every claim it holds, on the database
        clock. Not an event (a mutable row). False when the run is no longer 'running' (another
        run declared it dead): the caller must stop. `progressed`: the run advanced since the
        last beat (its progress time moves only then). `extend_claims=False`: the run's
        claims keep their own deadlines (an outside handler's time to answer)."""
        now = self.clock()
        until = now + timedelta(seconds=lease_seconds)
        values: dict[str, Any] = {"heartbeat_at": now, "expires_at": until}
        if progressed:
            values["progress_at"] = now

        def work() -> bool:
            with write_transaction(self.engine) as conn:
                alive = conn.execute(update(t.runs).where(
                    t.runs.c.run_id == run_id, t.runs.c.status == "running").values(**values)
                ).rowcount
                if alive and extend_claims:
                    conn.execute(update(t.messages).where(
                        t.messages.c.lease_run_id == run_id,
                        t.messages.c.state.in_(proj.IN_FLIGHT_STATES),
                    ).values(lease_expires_at=until))
                return bool(alive)
        return translated(work, what="heartbeat")

    # --- rebuilding ------------------------------------------------------------------------

    def iter_events(self, *, after: int = 0, batch: int = 5000,
                    conn: Connection | None = None) -> Any:
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
                yield row_event(row)
            after = rows[-1].seq

    def rebuild(self, *, is_alive: Callable[[port.RunRow], bool] | None = None) -> int:
        """Recompute every projection from the events; returns how many events were replayed.

        Refused while a run is alive (`is_alive`): its claims and leases would be rewritten
        under it. Holds the write lock throughout, so no append interleaves.
        """
        def work() -> int:
            count = 0
            with write_transaction(self.engine) as conn:
                if is_alive is not None:
                    live = [port.from_mapping(port.RunRow, r._mapping) for r in conn.execute(
                        select(t.runs).where(t.runs.c.status == "running")).all()]
                    busy = [r for r in live if is_alive(r)]
                    if busy:
                        raise errors.UsageError(
                            "refusing to rebuild while runs are live: " + ", ".join(
                                f"{r.account} (pid {r.pid} on {r.host})" for r in busy)
                            + "; stop them first")
                proj.clear(conn)
                for e in self.iter_events(conn=conn):
                    proj.apply(conn, e)
                    count += 1
            return count
        return translated(work, what="rebuild")
