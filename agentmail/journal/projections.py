"""Projections: how each event changes the derived tables.

`apply` runs inside the transaction that appends the event, so an event and
its projection changes commit together or not at all; `rebuild` replays every
event through the same `apply`, which is what makes rebuild equal the live state.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from agentmail import errors, lifecycle
from agentmail.journal import events as ev
from agentmail.journal import tables as t

# Message states (the `messages.state` column), as agentmail.lifecycle defines them.
PENDING = lifecycle.PENDING
CLAIMED = lifecycle.CLAIMED
PROCESSED = lifecycle.PROCESSED
ACKED = lifecycle.ACKED
DEAD_LETTERED = lifecycle.DEAD_LETTERED
REJECTED = lifecycle.REJECTED
DUPLICATE = lifecycle.DUPLICATE
SENT = lifecycle.SENT
IN_FLIGHT_STATES = lifecycle.IN_FLIGHT

# (connection, event, strict): strict when appending live, so a state change that the
# lifecycle does not allow, or that names a claim token no longer current, raises LeaseLost
# and commits nothing. Rebuild replays stored events, which all passed that check, unchecked.
Applier = Callable[[Connection, ev.Event, bool], None]


def conversation_id_for(seed: str) -> str:
    """A short printable id, stable for the message that started the conversation."""
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    return "c" + base64.b32encode(digest).decode("ascii")[:11].lower()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# --- runs and accounts ---------------------------------------------------------------------

def _run_started(conn: Connection, e: ev.Event, strict: bool) -> None:
    conn.execute(insert(t.runs).values(
        run_id=e.run_id, account=e.account, host=e.data.get("host"), pid=e.data.get("pid"),
        started_at=e.at, heartbeat_at=e.at, expires_at=_parse_time(e.data.get("expires_at")),
        progress_at=e.at, status="running",
    ))
    _touch_account(conn, e)


def _run_heartbeat(conn: Connection, e: ev.Event, strict: bool) -> None:
    """Journals written before heartbeats moved to the runs row have these events."""
    conn.execute(update(t.runs).where(t.runs.c.run_id == e.run_id).values(heartbeat_at=e.at))
    lease_until = _parse_time(e.data.get("lease_until"))
    if lease_until is not None:
        # A live run keeps every lease it holds, so a slow handler is never taken from it.
        conn.execute(update(t.messages).where(t.messages.c.lease_run_id == e.run_id)
                     .values(lease_expires_at=lease_until))


def _run_stopped(conn: Connection, e: ev.Event, strict: bool) -> None:
    conn.execute(update(t.runs).where(t.runs.c.run_id == e.data.get("stopped_run_id", e.run_id))
                 .values(stopped_at=e.at, status="stopped",
                         summary=_dumps(e.data.get("summary", {"reason": e.data.get("reason")}))))


def _touch_account(conn: Connection, e: ev.Event, **values: Any) -> None:
    changed = conn.execute(update(t.accounts).where(t.accounts.c.address == e.account)
                           .values(last_seq=e.seq, **values)).rowcount
    if not changed:
        conn.execute(insert(t.accounts).values(address=e.account, first_seq=e.seq,
                                               last_seq=e.seq, **values))


def _synced(conn: Connection, e: ev.Event, strict: bool) -> None:
    _touch_account(conn, e, history_id=e.data["history_id"], last_sync_at=e.at)


# --- conversations -------------------------------------------------------------------------

def _link_conversation(conn: Connection, e: ev.Event, own_id: str, linked: Iterable[str]) -> str:
    """Put `own_id` and every Message-ID it links to in one conversation; merge if needed."""
    return _link(conn, e, own_id, linked)[0]


def _link(conn: Connection, e: ev.Event, own_id: str,
          linked: Iterable[str]) -> tuple[str, bool]:
    """`_link_conversation`, also saying whether the conversation was created just now."""
    ids = list(dict.fromkeys([own_id, *linked]))
    rows = conn.execute(select(t.message_refs.c.rfc_message_id, t.message_refs.c.conversation_id)
                        .where(t.message_refs.c.rfc_message_id.in_(ids))).all()
    found = {cid for _, cid in rows}
    created = not found
    if created:
        cid = conversation_id_for(own_id)
        conn.execute(insert(t.conversations).values(
            id=cid, participants="[]", message_count=0, created_seq=e.seq, last_seq=e.seq))
    elif len(found) == 1:
        cid = found.pop()
    else:
        cid = _merge_conversations(conn, found)
    known = {rid for rid, _ in rows}
    missing = [rid for rid in ids if rid not in known]
    if missing:
        conn.execute(insert(t.message_refs), [{"rfc_message_id": rid, "conversation_id": cid}
                                              for rid in missing])
    return cid, created


def _merge_conversations(conn: Connection, cids: set[str]) -> str:
    """The oldest conversation absorbs the others (deterministic, so rebuild agrees)."""
    ordered = conn.execute(select(t.conversations.c.id).where(t.conversations.c.id.in_(cids))
                           .order_by(t.conversations.c.created_seq)).scalars().all()
    survivor, absorbed = ordered[0], ordered[1:]
    for table in (t.message_refs, t.messages):
        conn.execute(update(table).where(table.c.conversation_id.in_(absorbed))
                     .values(conversation_id=survivor))
    conn.execute(delete(t.conversations).where(t.conversations.c.id.in_(absorbed)))
    return survivor


def _refresh_conversation(conn: Connection, cid: str, e: ev.Event) -> None:
    m = t.messages
    distinct_id = func.coalesce(m.c.rfc_message_id, m.c.key)
    count, first_at, last_at = conn.execute(
        select(func.count(distinct_id.distinct()), func.min(m.c.sent_at), func.max(m.c.sent_at))
        .where(m.c.conversation_id == cid)).one()
    people: set[str] = set()
    subject = None
    for sender, recipients, subj in conn.execute(
            select(m.c.sender, m.c.recipients, m.c.subject).where(m.c.conversation_id == cid)
            .order_by(m.c.first_seq)):
        if sender:
            people.add(sender)
        people.update(json.loads(recipients))
        subject = subject if subject is not None else subj
    conn.execute(update(t.conversations).where(t.conversations.c.id == cid).values(
        message_count=count, first_at=first_at, last_at=last_at, subject=subject,
        participants=_dumps(sorted(people)), last_seq=e.seq))


# --- one message's life --------------------------------------------------------------------

def _message_row(key: str, e: ev.Event, d: dict[str, Any], direction: str,
                 state: str) -> dict[str, Any]:
    return {
        "key": key, "account": e.account, "provider_id": d["provider_id"],
        "direction": direction, "thread_id": d.get("thread_id"),
        "rfc_message_id": d.get("message_id"), "in_reply_to": d.get("in_reply_to"),
        "references": _dumps(d.get("references", [])), "sender": d.get("sender"),
        "recipients": _dumps(d.get("recipients", [])), "subject": d.get("subject"),
        "sent_at": _parse_time(d.get("date")) or e.at,
        "payload": _dumps(d["payload"]) if d.get("payload") is not None else None,
        "state": state, "attempts": 0, "first_seq": e.seq, "last_seq": e.seq, "updated_at": e.at,
    }


def _add_message(conn: Connection, e: ev.Event, key: str, direction: str, state: str) -> None:
    d = e.data
    row = _message_row(key, e, d, direction, state)
    linked = [*d.get("references", []), *([d["in_reply_to"]] if d.get("in_reply_to") else [])]
    cid, created = _link(conn, e, d.get("message_id") or key, linked)
    row["conversation_id"] = cid
    conn.execute(insert(t.messages).values(**row))
    if created:  # its only message: no need to read the conversation back
        people = {*json.loads(row["recipients"]), *([row["sender"]] if row["sender"] else [])}
        conn.execute(update(t.conversations).where(t.conversations.c.id == cid).values(
            message_count=1, first_at=row["sent_at"], last_at=row["sent_at"],
            subject=row["subject"], participants=_dumps(sorted(people)), last_seq=e.seq))
    else:
        _refresh_conversation(conn, cid, e)
    _touch_account(conn, e)


def _set_state(conn: Connection, e: ev.Event, strict: bool = False, **values: Any) -> None:
    """Change one message as `e` says: a compare-and-set when `strict` (see `Applier`)."""
    m = t.messages
    rule = lifecycle.TRANSITIONS.get(e.kind) if e.kind != ev.RECONCILED or \
        e.data.get("lease_until") else None
    query = update(m).where(m.c.key == e.message_key)
    if rule is not None:
        if rule.target is not None:
            values.setdefault("state", rule.target)
        if "new_token" in e.data:
            values["lease_token"] = e.data["new_token"]
        if strict:
            query = query.where(m.c.state.in_(rule.sources))
            if rule.fenced and e.data.get("token") is not None:
                query = query.where(m.c.lease_token == e.data["token"])
    found = conn.execute(query.values(last_seq=e.seq, updated_at=e.at, **values)
                         .returning(m.c.conversation_id)).first()
    if found is None:
        if strict and rule is not None:
            raise errors.LeaseLost(key=e.message_key, kind=e.kind)
        return
    if found.conversation_id:
        conn.execute(update(t.conversations).where(t.conversations.c.id == found.conversation_id)
                     .values(last_seq=e.seq))


def _fetched(conn: Connection, e: ev.Event, strict: bool) -> None:
    if e.message_key is None:
        raise ValueError(f"a {e.kind} event names no message (seq {e.seq})")
    _add_message(conn, e, e.message_key, "in", PENDING)


def _claimed(conn: Connection, e: ev.Event, strict: bool) -> None:
    _set_state(conn, e, strict, attempts=e.attempt, lease_run_id=e.run_id, handler_started_at=None,
               lease_expires_at=_parse_time(e.data["lease_until"]), next_attempt_at=None)


def _processed(conn: Connection, e: ev.Event, strict: bool) -> None:
    _set_state(conn, e, strict)
    _queue_outgoing(conn, e)


def _queue_outgoing(conn: Connection, e: ev.Event) -> None:
    """Put the messages an event journals as outgoing into the outbox, state queued."""
    source = conn.execute(select(t.messages.c.conversation_id, t.messages.c.rfc_message_id)
                          .where(t.messages.c.key == e.message_key)).first()
    # A replayed message's new result queues after what earlier results queued.
    base = conn.execute(select(func.count()).select_from(t.outbox)
                        .where(t.outbox.c.source_key == e.message_key)).scalar() or 0
    for index, out in enumerate(e.data.get("outgoing", [])):
        conn.execute(insert(t.outbox).values(
            outbox_id=out["outbox_id"], account=e.account, source_key=e.message_key,
            position=base + index, rfc_message_id=out["message_id"],
            thread_id=out.get("thread_id"),
            recipients=_dumps(out["recipients"]), subject=out.get("subject"), raw=out["raw"],
            state="queued", created_seq=e.seq,
            idempotency_key=e.data.get("idempotency_key"),
            content_digest=e.data.get("content_digest")))
        if source is not None and source.conversation_id:
            # What a handler sends belongs to the conversation of the message it handled,
            # before it is even sent (and a request to a third agent joins it too).
            assert e.message_key is not None  # source was found by it
            _link_conversation(conn, e, out["message_id"],
                               [source.rfc_message_id or e.message_key])


def _check_owner(conn: Connection, e: ev.Event) -> None:
    """`e` may be journaled only while its message is in a source state under its token."""
    rule = lifecycle.TRANSITIONS[e.kind]
    m = t.messages
    row = conn.execute(select(m.c.state, m.c.lease_token).where(m.c.key == e.message_key)).first()
    if row is None:  # a request of `agentmail send`: its key names no received message
        return
    token = e.data.get("token")
    if row.state not in rule.sources or (token is not None and row.lease_token != token):
        raise errors.LeaseLost(key=e.message_key, kind=e.kind)


def _sent(conn: Connection, e: ev.Event, strict: bool) -> None:
    d = e.data
    if strict and e.message_key:
        _check_owner(conn, e)
    if d.get("outbox_id"):
        o = t.outbox
        changed = conn.execute(update(o).where(
            o.c.outbox_id == d["outbox_id"], *([o.c.state == "queued"] if strict else []))
            .values(state="sent", provider_id=d["provider_id"], sent_at=e.at)).rowcount
        if strict and not changed:  # someone journaled this send already
            raise errors.LeaseLost(f"outbox {d['outbox_id']} is no longer queued",
                                   key=e.message_key, kind=e.kind)
    # The sent copy is a message of its own in our mailbox; the event stays filed under the
    # message whose handling produced it.
    key = ev.message_key(e.account, d["provider_id"])
    exists = conn.execute(select(t.messages.c.key).where(t.messages.c.key == key)).first()
    if exists is None:
        _add_message(conn, e, key, "out", SENT)


def _failed(conn: Connection, e: ev.Event, strict: bool) -> None:
    if e.message_key is None:  # a run's mailbox error: the journal keeps it, no message changes
        return
    if e.data.get("stage") == "error_reply":
        # A refused error reply is given up, not retried; the rejection and its reason stand.
        _set_state(conn, e, strict)
        conn.execute(update(t.outbox).where(t.outbox.c.outbox_id == e.data.get("outbox_id"))
                     .values(state="refused"))
        return
    _set_state(conn, e, strict, last_error=f"{e.data.get('error_class')}: {e.data.get('error')}")


def _released(conn: Connection, e: ev.Event, strict: bool) -> None:
    # Recovery gives back the attempt of a claim whose handler never started.
    refund = {"attempts": t.messages.c.attempts - 1} if e.data.get("refund_attempt") else {}
    _set_state(conn, e, strict, lease_run_id=None, lease_expires_at=None,
               next_attempt_at=_parse_time(e.data.get("next_attempt_at")), **refund)


def _acked(conn: Connection, e: ev.Event, strict: bool) -> None:
    _set_state(conn, e, strict, lease_run_id=None, lease_expires_at=None)


def _dead_lettered(conn: Connection, e: ev.Event, strict: bool) -> None:
    _set_state(conn, e, strict, lease_run_id=None, lease_expires_at=None)


def _duplicate(conn: Connection, e: ev.Event, strict: bool) -> None:
    _set_state(conn, e, strict, duplicate_of=e.data.get("duplicate_of"), lease_run_id=None,
               lease_expires_at=None)


def _rejected(conn: Connection, e: ev.Event, strict: bool) -> None:
    _set_state(conn, e, strict, last_error=e.data.get("reason"), lease_run_id=None,
               lease_expires_at=None)
    _queue_outgoing(conn, e)  # an optional structured error reply (`error_replies`)


def _replay_requested(conn: Connection, e: ev.Event, strict: bool) -> None:
    _set_state(conn, e, strict, attempts=0, next_attempt_at=None, lease_run_id=None,
               lease_expires_at=None)
    # What an earlier result queued and never sent (a refused send) is superseded by the
    # replay's own result: it must not go out as well.
    conn.execute(update(t.outbox).where(t.outbox.c.source_key == e.message_key,
                                        t.outbox.c.state == "queued").values(state="dropped"))


def _send_requested(conn: Connection, e: ev.Event, strict: bool) -> None:
    """`agentmail send`: the request waits in the outbox (its key names no received copy)."""
    _queue_outgoing(conn, e)


def _journal_only(conn: Connection, e: ev.Event, strict: bool) -> None:
    """Kinds that record what happened and change no projection by themselves."""
    if e.message_key:
        _set_state(conn, e, strict)


def _reconciled(conn: Connection, e: ev.Event, strict: bool) -> None:
    """Recovery that finishes a dead run's message takes its lease first."""
    if e.message_key and e.data.get("lease_until"):
        _set_state(conn, e, strict, lease_run_id=e.run_id,
                   lease_expires_at=_parse_time(e.data["lease_until"]))
    else:
        _journal_only(conn, e, strict)


# --- outgoing mail held for approval --------------------------------------------------------

def _approval_requested(conn: Connection, e: ev.Event, strict: bool) -> None:
    d = e.data
    conn.execute(insert(t.approvals).values(
        id=d["approval_id"], account=e.account, action=d["action"], message_key=e.message_key,
        request=_dumps(d["request"]), state="pending", created_seq=e.seq, last_seq=e.seq,
        updated_at=e.at))


def _approval_decided(conn: Connection, e: ev.Event, strict: bool) -> None:
    d = e.data
    conn.execute(update(t.approvals).where(t.approvals.c.id == d["approval_id"]).values(
        state=d["decision"], decided_by=d.get("by"), note=d.get("note"), last_seq=e.seq,
        updated_at=e.at))


def _approval_done(conn: Connection, e: ev.Event, strict: bool) -> None:
    d = e.data
    conn.execute(update(t.approvals).where(t.approvals.c.id == d["approval_id"]).values(
        state="done" if d.get("ok") else "failed", result=_dumps(d.get("result")),
        last_seq=e.seq, updated_at=e.at))


APPLIERS: dict[str, Applier] = {
    ev.RUN_STARTED: _run_started,
    ev.RUN_HEARTBEAT: _run_heartbeat,
    ev.RUN_STOPPED: _run_stopped,
    ev.SYNCED: _synced,
    ev.FETCHED: _fetched,
    ev.CLAIMED: _claimed,
    ev.PROCESSED: _processed,
    ev.SENT: _sent,
    ev.FAILED: _failed,
    ev.RELEASED: _released,
    ev.ACKED: _acked,
    ev.DEAD_LETTERED: _dead_lettered,
    ev.REJECTED: _rejected,
    ev.REPLAY_REQUESTED: _replay_requested,
    ev.LOOP_GUARDED: _journal_only,
    ev.DELIVERY_FAILED: _journal_only,
    ev.RECONCILED: _reconciled,
    ev.DUPLICATE: _duplicate,
    ev.SEND_REQUESTED: _send_requested,
    ev.APPROVAL_REQUESTED: _approval_requested,
    ev.APPROVAL_DECIDED: _approval_decided,
    ev.APPROVAL_DONE: _approval_done,
}
assert set(APPLIERS) == ev.KINDS, "every event kind needs a projection rule"


def apply(conn: Connection, event: ev.Event, *, strict: bool = False) -> None:
    APPLIERS[event.kind](conn, event, strict)


def clear(conn: Connection) -> None:
    for table in reversed(t.PROJECTIONS):
        conn.execute(delete(table))
