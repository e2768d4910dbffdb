"""Received messages' raw bytes, beside the event log (table ``message_bodies``).

Why not in the events: a body is needed only until its message is finished (handled, or
replayed after a fix), while events are kept forever and read whole by rebuild, verify and
every ``events_of_message``. Kept inline, one 1 MB message is 1.3 MB of JSON in each of those
reads, forever. So a body is written in the same transaction as its ``fetched`` event (the
write-ahead rule holds: nothing is claimable before its body is stored), read back as bytes,
and deleted by :func:`compact` once its message is finished and older than the retention.

Journals written before this table keep bodies inline in ``fetched`` data ("raw"); they are
still read from there, and :func:`compact` strips them from finished messages.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from agentmail import lifecycle
from agentmail.journal import events as ev
from agentmail.journal import tables as t

#: States after which a body is never read again (replay of a dead-lettered message needs
#: its body, so dead letters keep theirs unless asked).
FINISHED = (lifecycle.ACKED, lifecycle.REJECTED, lifecycle.DUPLICATE)


@dataclass(frozen=True)
class Body:
    """The raw bytes of one received message, stored with its `fetched` event."""

    key: str
    account: str
    raw: bytes


@dataclass(frozen=True)
class CompactReport:
    bodies_deleted: int
    bytes_freed: int
    events_stripped: int  # older `fetched` events whose inline body was removed
    kept_dead_lettered: int  # bodies kept because their message may still be replayed


def store(conn: Connection, bodies: Sequence[Body], now: datetime) -> None:
    if bodies:
        conn.execute(insert(t.message_bodies), [
            {"message_key": b.key, "account": b.account, "size": len(b.raw), "raw": b.raw,
             "stored_at": now} for b in bodies])


def read(conn: Connection, key: str) -> bytes | None:
    """The body of message `key`, or None when none was kept (rejected, or compacted)."""
    raw = conn.execute(select(t.message_bodies.c.raw)
                       .where(t.message_bodies.c.message_key == key)).scalar()
    if raw is not None:
        return bytes(raw)
    data = conn.execute(select(t.events.c.data).where(
        t.events.c.message_key == key, t.events.c.kind == ev.FETCHED)
        .order_by(t.events.c.seq).limit(1)).scalar()
    inline = json.loads(data).get("raw") if data else None
    return base64.urlsafe_b64decode(inline.encode("ascii")) if inline else None


def compact(conn: Connection, *, now: datetime, retention: timedelta,
            include_dead_lettered: bool = False) -> CompactReport:
    """Delete the bodies of messages finished before ``now - retention``."""
    m, b = t.messages, t.message_bodies
    states = [*FINISHED, *([lifecycle.DEAD_LETTERED] if include_dead_lettered else [])]
    old = select(m.c.key).where(m.c.direction == "in", m.c.state.in_(states),
                                m.c.updated_at < now - retention)
    freed = conn.execute(select(func.count(), func.coalesce(func.sum(b.c.size), 0))
                         .where(b.c.message_key.in_(old))).one()
    conn.execute(delete(b).where(b.c.message_key.in_(old)))
    stripped = 0
    rows = conn.execute(select(t.events.c.seq, t.events.c.data).where(
        t.events.c.kind == ev.FETCHED, t.events.c.message_key.in_(old),
        t.events.c.data.like('%"raw":%'))).all()
    for seq, data in rows:
        doc = json.loads(data)
        if doc.pop("raw", None) is not None:
            conn.execute(update(t.events).where(t.events.c.seq == seq)
                         .values(data=json.dumps(doc, sort_keys=True, separators=(",", ":"))))
            stripped += 1
    kept = 0 if include_dead_lettered else conn.execute(
        select(func.count()).select_from(b).join(m, m.c.key == b.c.message_key)
        .where(m.c.state == lifecycle.DEAD_LETTERED)).scalar() or 0
    return CompactReport(int(freed[0]), int(freed[1]), stripped, int(kept))
