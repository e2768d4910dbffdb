"""Named questions about conversations: resolve an id, read one, list them, read their events.

A conversation is the set of messages linked by Message-ID / In-Reply-To /
References across every mailbox of the journal (the projections build it as
events arrive, see `projections._link_conversation`). Here it is read back:

- `resolve` turns whatever a person has at hand (a conversation id, a Gmail
  threadId of any account, a Message-ID with or without angle brackets, a
  provider message id or message key) into conversation ids;
- `conversation_messages` lists its messages once each: agent A's sent copy and
  agent B's received copy of one Message-ID are one message with two copies;
- `list_conversations` pages through them, newest activity first;
- `events_in` / `follow` read the raw journal of a message or a conversation.

Every function takes an opened `Journal` and only reads; each lookup is an
indexed query, so the cost does not grow with the size of the journal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, exists, or_, select

from agentmail import errors
from agentmail.journal import events as ev
from agentmail.journal import projections as proj
from agentmail.journal import queries
from agentmail.journal import tables as t
from agentmail.journal.store import Journal, as_utc

# Extra states shown for a message that has no `messages` row of its own.
QUEUED = "queued"  # produced by a handler, journaled as processed, not sent yet

# Flags of a conversation, from the states of its messages.
PENDING_STATES = (proj.PENDING, proj.CLAIMED, proj.PROCESSED)

DEFAULT_FOLLOW_INTERVAL = 1.0  # seconds between two polls of `follow`
NO_TIME = datetime.max.replace(tzinfo=timezone.utc)  # sorts a message without a time last


# --- resolving an id -----------------------------------------------------------------------

def _message_id_forms(ident: str) -> list[str]:
    """A Message-ID as typed, with and without its angle brackets."""
    bare = ident.strip().removeprefix("<").removesuffix(">")
    return list(dict.fromkeys([ident.strip(), f"<{bare}>", bare]))


def resolve(journal: Journal, ident: str) -> list[str]:
    """Every conversation `ident` can name, sorted; empty when it names none.

    `ident` may be a conversation id, a mailbox thread id (any account), a Message-ID
    of a message or of a reference (with or without <>), a provider message id or a
    message key (account:provider_id). Several results mean the id is ambiguous.
    """
    m, refs, c, o = t.messages, t.message_refs, t.conversations, t.outbox
    forms = _message_id_forms(ident)
    with journal.engine.connect() as conn:
        if conn.execute(select(c.c.id).where(c.c.id == ident, c.c.message_count > 0)).first():
            return [ident]
        found: set[str] = set(conn.execute(
            select(refs.c.conversation_id).join(c, c.c.id == refs.c.conversation_id)
            .where(refs.c.rfc_message_id.in_(forms), c.c.message_count > 0)).scalars())
        found.update(cid for cid in conn.execute(select(m.c.conversation_id).where(or_(
            m.c.thread_id == ident, m.c.provider_id == ident, m.c.key == ident))).scalars() if cid)
        # A reply still in the outbox: the projection files its Message-ID apart (a conversation
        # with no message yet) until it is sent; it belongs with the message it answers.
        found.update(cid for cid in conn.execute(
            select(m.c.conversation_id).join(o, o.c.source_key == m.c.key)
            .where(o.c.rfc_message_id.in_(forms))).scalars() if cid)
    return sorted(found)


def resolve_one(journal: Journal, ident: str) -> str:
    """The one conversation `ident` names; `errors.NotFound` when none or several."""
    found = resolve(journal, ident)
    if len(found) == 1:
        return found[0]
    if not found:
        raise errors.NotFound(
            f"no conversation matches {ident!r}: pass a conversation id (see `agentmail threads`), "
            "a Gmail thread id or a Message-ID")
    lines = [f"{ident!r} is ambiguous: it matches {len(found)} conversations; pass one of them:"]
    for summary in summaries(journal, found):
        lines.append(f"  {summary.id}  {summary.message_count} messages  "
                     f"{_iso(summary.last_activity)}  {summary.subject or '(no subject)'}")
    raise errors.NotFound("\n".join(lines))


# --- one conversation ----------------------------------------------------------------------

@dataclass(frozen=True)
class Copy:
    """One mailbox's copy of a message (`messages` row), or a queued outbox entry."""

    key: str | None
    account: str
    provider_id: str | None
    thread_id: str | None
    direction: str  # "in" | "out"
    state: str
    attempts: int
    first_seq: int  # the event that brought it into the journal

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "account": self.account, "provider_id": self.provider_id,
                "thread_id": self.thread_id, "direction": self.direction, "state": self.state,
                "attempts": self.attempts}


@dataclass
class ConversationMessage:
    """One message of a conversation, however many mailboxes hold a copy of it.

    Headers and payload come from a received copy when there is one (what the
    recipient saw), and so do `state`, `attempts` and `last_error`.
    """

    message_id: str | None
    time: datetime | None
    sender: str | None
    recipients: list[str]
    subject: str | None
    in_reply_to: str | None
    references: list[str]
    payload: Any
    state: str
    attempts: int
    last_error: str | None
    copies: list[Copy] = field(default_factory=list)
    events: list[ev.Event] = field(default_factory=list)

    @property
    def order(self) -> tuple[datetime, int]:
        first = min(c.first_seq for c in self.copies)
        return (self.time or NO_TIME, first)


def _copy(row: Any) -> Copy:
    return Copy(key=row.key, account=row.account, provider_id=row.provider_id,
                thread_id=row.thread_id, direction=row.direction, state=row.state,
                attempts=row.attempts, first_seq=row.first_seq)


def _from_rows(rows: list[Any]) -> ConversationMessage:
    """Merge the copies of one Message-ID, a received copy first."""
    rows = sorted(rows, key=lambda r: (r.direction != "in", r.first_seq))
    best = rows[0]
    return ConversationMessage(
        message_id=best.rfc_message_id, time=as_utc(best.sent_at), sender=best.sender,
        recipients=json.loads(best.recipients), subject=best.subject,
        in_reply_to=best.in_reply_to, references=json.loads(best.references),
        payload=json.loads(best.payload) if best.payload is not None else None,
        state=best.state, attempts=best.attempts, last_error=best.last_error,
        copies=[_copy(r) for r in rows])


def _queued(conn: Connection, keys: list[str], known: set[str]) -> list[ConversationMessage]:
    """Outgoing messages a handler produced whose send is not journaled yet."""
    if not keys:
        return []
    o, e = t.outbox, t.events
    found = []
    for row in conn.execute(select(o, e.c.at, e.c.data).join(e, e.c.seq == o.c.created_seq)
                            .where(o.c.source_key.in_(keys), o.c.state == QUEUED)
                            .order_by(o.c.created_seq, o.c.position)):
        if row.rfc_message_id in known:
            continue
        outgoing = json.loads(row.data).get("outgoing", [])
        detail: dict[str, Any] = next(
            (item for item in outgoing if item.get("outbox_id") == row.outbox_id), {})
        found.append(ConversationMessage(
            message_id=row.rfc_message_id, time=as_utc(row.at), sender=row.account,
            recipients=json.loads(row.recipients), subject=row.subject,
            in_reply_to=detail.get("in_reply_to"), references=list(detail.get("references", [])),
            payload=detail.get("payload"), state=QUEUED, attempts=0, last_error=None,
            copies=[Copy(key=None, account=row.account, provider_id=None, thread_id=row.thread_id,
                         direction="out", state=QUEUED, attempts=0, first_seq=row.created_seq)]))
    return found


def conversation_messages(journal: Journal, conversation_id: str, *,
                          with_events: bool = False) -> list[ConversationMessage]:
    """The messages of a conversation in order (Date header, then journal order), one per Message-ID.

    Copies of one Message-ID in several mailboxes are merged; outgoing messages
    still waiting in the outbox appear with state "queued". With `with_events`,
    each message carries its journal steps: the events filed under its received
    copies, the `sent` event that created each sent copy, and for a queued one
    the `processed` event that produced it.
    """
    m = t.messages
    with journal.engine.connect() as conn:
        rows = conn.execute(select(m).where(m.c.conversation_id == conversation_id)).all()
        groups: dict[str, list[Any]] = {}
        for row in rows:
            groups.setdefault(row.rfc_message_id or row.key, []).append(row)
        found = [_from_rows(group) for group in groups.values()]
        source_keys = [r.key for r in rows if r.direction == "in"]
        found += _queued(conn, source_keys, {r.rfc_message_id for r in rows})
        if with_events:
            _attach_events(conn, found)
    return sorted(found, key=lambda msg: msg.order)


def _attach_events(conn: Connection, found: list[ConversationMessage]) -> None:
    by_key: dict[str, ConversationMessage] = {}
    by_seq: dict[int, ConversationMessage] = {}
    for msg in found:
        for c in msg.copies:
            if c.key is None:  # queued: its `processed` event stays with the message it answers
                continue
            by_key[c.key] = msg
            if c.direction == "out":  # a sent copy's own step is the `sent` event that made it
                by_seq[c.first_seq] = msg
    for event in _select_events(conn, list(by_key), list(by_seq)):
        owner = by_seq.get(event.seq) if event.seq in by_seq else by_key.get(event.message_key or "")
        if owner is not None:
            owner.events.append(event)


# --- listing conversations -----------------------------------------------------------------

@dataclass(frozen=True)
class ConversationSummary:
    """One line of `agentmail threads`."""

    id: str
    subject: str | None
    participants: list[str]
    message_count: int
    first_at: datetime | None
    last_at: datetime | None  # Date of its newest message
    last_activity: datetime | None  # time of the newest journal event touching it
    last_seq: int
    pending: bool  # a received message not finished yet, or an outgoing one not sent
    failed: bool  # a message dead-lettered, or failing and waiting for a retry
    rejected: bool  # a message refused by policy before any handler saw it

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "participants": self.participants,
                "message_count": self.message_count, "first_at": _iso(self.first_at),
                "last_at": _iso(self.last_at), "last_activity": _iso(self.last_activity),
                "last_seq": self.last_seq, "pending": self.pending, "failed": self.failed,
                "rejected": self.rejected}


def _flags(conn: Connection, ids: list[str]) -> dict[str, set[str]]:
    m, o = t.messages, t.outbox
    flags: dict[str, set[str]] = {cid: set() for cid in ids}
    rows = conn.execute(select(m.c.conversation_id, m.c.key, m.c.state, m.c.last_error)
                        .where(m.c.conversation_id.in_(ids))).all()
    for cid, _key, state, last_error in rows:
        if state in PENDING_STATES:
            flags[cid].add("pending")
            if last_error:
                flags[cid].add("failed")
        elif state == proj.DEAD_LETTERED:
            flags[cid].add("failed")
        elif state == proj.REJECTED:
            flags[cid].add("rejected")
    conversation_of = {key: cid for cid, key, _, _ in rows}
    if conversation_of:
        for (source_key,) in conn.execute(select(o.c.source_key).where(
                o.c.source_key.in_(list(conversation_of)), o.c.state == QUEUED)):
            flags[conversation_of[source_key]].add("pending")
    return flags


def _summaries(conn: Connection, rows: Sequence[Any]) -> list[ConversationSummary]:
    flags = _flags(conn, [r.id for r in rows])
    return [ConversationSummary(
        id=r.id, subject=r.subject, participants=json.loads(r.participants),
        message_count=r.message_count, first_at=as_utc(r.first_at), last_at=as_utc(r.last_at),
        last_activity=as_utc(r.at), last_seq=r.last_seq, pending="pending" in flags[r.id],
        failed="failed" in flags[r.id], rejected="rejected" in flags[r.id]) for r in rows]


def _summary_query() -> Any:
    c, e = t.conversations, t.events
    return select(c, e.c.at).join(e, e.c.seq == c.c.last_seq, isouter=True)


def list_conversations(journal: Journal, *, email: str | None = None,
                       limit: int | None = 20) -> list[ConversationSummary]:
    """Conversations, newest journal activity first; with `email`, only those it has a message in."""
    c, m = t.conversations, t.messages
    # Conversations without messages only hold the Message-ID of a reply not sent yet.
    query = _summary_query().where(c.c.message_count > 0).order_by(c.c.last_seq.desc())
    if email is not None:
        query = query.where(exists().where(m.c.conversation_id == c.c.id, m.c.account == email))
    if limit is not None:
        query = query.limit(limit)
    with journal.engine.connect() as conn:
        return _summaries(conn, conn.execute(query).all())


def summaries(journal: Journal, ids: Iterable[str]) -> list[ConversationSummary]:
    """The summaries of the given conversations, newest activity first."""
    c = t.conversations
    query = _summary_query().where(c.c.id.in_(list(ids))).order_by(c.c.last_seq.desc())
    with journal.engine.connect() as conn:
        return _summaries(conn, conn.execute(query).all())


def summary(journal: Journal, conversation_id: str) -> ConversationSummary:
    found = summaries(journal, [conversation_id])
    if not found:
        raise errors.NotFound(f"no conversation {conversation_id!r}")
    return found[0]


# --- events --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventScope:
    """Which events `events_in` reads: those filed under `keys`, plus the events numbered `seqs`.

    `keys=None` means the whole journal.
    """

    keys: tuple[str, ...] | None
    seqs: tuple[int, ...] = ()
    label: str = "the journal"


EVERYTHING = EventScope(keys=None)


def _scope_of_rows(rows: Iterable[Any], label: str) -> EventScope:
    rows = list(rows)
    keys = tuple(r.key for r in rows)
    seqs = tuple(r.first_seq for r in rows if r.direction != "in")
    return EventScope(keys=keys, seqs=seqs, label=label)


def message_scope(journal: Journal, ident: str) -> EventScope:
    """The events of one message: by key, provider id or Message-ID (every copy of it).

    A sent copy contributes the `sent` event that created it (sends are filed under the
    message whose handling produced them). `errors.NotFound` when nothing or several
    different messages match.
    """
    m = t.messages
    with journal.engine.connect() as conn:
        rows = conn.execute(select(m).where(or_(
            m.c.key == ident, m.c.provider_id == ident,
            m.c.rfc_message_id.in_(_message_id_forms(ident))))).all()
    distinct = sorted({r.rfc_message_id or r.key for r in rows})
    if not distinct:
        raise errors.NotFound(f"no message matches {ident!r}: pass a message key "
                              "(account:provider_id), a provider message id or a Message-ID")
    if len(distinct) > 1:
        raise errors.NotFound(f"{ident!r} is ambiguous: it matches {len(distinct)} messages: "
                              f"{', '.join(distinct)}; pass one of these Message-IDs")
    return _scope_of_rows(rows, f"message {distinct[0]}")


def conversation_scope(journal: Journal, conversation_id: str) -> EventScope:
    """The events of every message of a conversation (as it stands now)."""
    m = t.messages
    with journal.engine.connect() as conn:
        rows = conn.execute(select(m.c.key, m.c.direction, m.c.first_seq)
                            .where(m.c.conversation_id == conversation_id)).all()
    return _scope_of_rows(rows, f"conversation {conversation_id}")


def _event_query(keys: list[str] | None, seqs: list[int], after: int) -> Any:
    e = t.events
    query = select(e).where(e.c.seq > after).order_by(e.c.seq)
    if keys is not None:
        query = query.where(or_(e.c.message_key.in_(keys), e.c.seq.in_(seqs)))
    return query


def _select_events(conn: Connection, keys: list[str], seqs: list[int]) -> list[ev.Event]:
    if not keys and not seqs:
        return []
    return [queries.row_event(r) for r in conn.execute(_event_query(keys, seqs, 0))]


def events_in(journal: Journal, scope: EventScope = EVERYTHING, *, after: int = 0,
              batch: int = 5000) -> Iterator[ev.Event]:
    """The events of `scope` with seq > `after`, oldest first, read in batches."""
    if scope.keys is None:
        yield from journal.iter_events(after=after, batch=batch)
        return
    if not scope.keys and not scope.seqs:
        return
    while True:
        with journal.engine.connect() as conn:
            rows = conn.execute(_event_query(list(scope.keys), list(scope.seqs), after)
                                .limit(batch)).all()
        yield from (queries.row_event(r) for r in rows)
        if len(rows) < batch:
            return
        after = rows[-1].seq


def last_seq(journal: Journal) -> int:
    """The newest event's seq (0 for an empty journal)."""
    e = t.events
    with journal.engine.connect() as conn:
        return conn.execute(select(e.c.seq).order_by(e.c.seq.desc()).limit(1)).scalar() or 0


def follow(journal: Journal, scope: Callable[[], EventScope], *, after: int = 0,
           interval: float = DEFAULT_FOLLOW_INTERVAL, stop: Callable[[], bool] = lambda: False,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[ev.Event]:
    """Every event of `scope()` after `after`, then each new one as it is appended.

    `scope` is called again before each poll, so a conversation that gains messages (or
    is merged into another) keeps being followed. Polls every `interval` seconds until
    `stop()` is true; the caller interrupts it otherwise (Ctrl-C).
    """
    while True:
        for event in events_in(journal, scope(), after=after):
            after = max(after, event.seq or 0)
            yield event
        if stop():
            return
        sleep(interval)


# --- rendering helpers shared by the CLI and scripts ---------------------------------------

def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def redact(data: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    """Event data for display: the raw message bytes (base64, possibly large) are left out.

    `raw` is replaced by its length in characters under `raw_chars` unless `full`.
    """
    if full:
        return data
    out = dict(data)
    if "raw" in out:
        out["raw_chars"] = len(out.pop("raw") or "")
    if isinstance(out.get("outgoing"), list):
        out["outgoing"] = [redact(o) if isinstance(o, dict) else o for o in out["outgoing"]]
    return out


def event_json(event: ev.Event, *, full: bool = False) -> dict[str, Any]:
    """`Event.to_json` with the raw message bytes left out unless `full`."""
    return {**event.to_json(), "data": redact(event.data, full=full)}
