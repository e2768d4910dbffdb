"""The journal's named questions: every read the pipeline, services and CLI make.

Reads run in read transactions (no lock: see `journal.engine`). Messages, outbox entries,
runs and accounts come back as the frozen rows of `journal.port`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, or_, select

from agentmail.journal import events as ev
from agentmail.journal import port
from agentmail.journal import projections as proj
from agentmail.journal import tables as t
from agentmail.journal.engine import as_utc


def row_event(row: Any) -> ev.Event:
    return ev.Event(kind=row.kind, account=row.account, data=ev.upcast(json.loads(row.data)),
                    message_key=row.message_key, run_id=row.run_id, attempt=row.attempt,
                    seq=row.seq, at=as_utc(row.at))


class JournalQueries:
    """Named questions, mixed into `journal.store.Journal`."""

    engine: Engine
    clock: Callable[[], datetime]

    def _all(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def events_of_message(self, key: str) -> list[ev.Event]:
        """The journal steps of one message, including sends filed under it."""
        return [row_event(r) for r in self._all(
            select(t.events).where(t.events.c.message_key == key).order_by(t.events.c.seq))]

    def events_since(self, seq: int = 0, *, limit: int | None = None,
                     keys: Sequence[str] | None = None) -> list[ev.Event]:
        query = select(t.events).where(t.events.c.seq > seq).order_by(t.events.c.seq)
        if keys is not None:
            query = query.where(t.events.c.message_key.in_(list(keys)))
        if limit is not None:
            query = query.limit(limit)
        return [row_event(r) for r in self._all(query)]

    def _messages(self, query: Any) -> list[port.MessageRow]:
        return [port.from_mapping(port.MessageRow, r._mapping) for r in self._all(query)]

    def _outbox(self, query: Any) -> list[port.OutboxRow]:
        return [port.from_mapping(port.OutboxRow, r._mapping) for r in self._all(query)]

    def _runs(self, query: Any) -> list[port.RunRow]:
        return [port.from_mapping(port.RunRow, r._mapping) for r in self._all(query)]

    def message(self, key: str) -> port.MessageRow | None:
        rows = self._messages(select(t.messages).where(t.messages.c.key == key))
        return rows[0] if rows else None

    def first_copies(self, account: str,
                     rfc_message_ids: Sequence[str]) -> dict[str, port.MessageRow]:
        """For each Message-ID, the first received copy of it in `account`, if any."""
        if not rfc_message_ids:
            return {}
        m = t.messages
        found: dict[str, port.MessageRow] = {}
        for row in self._messages(select(m).where(
                m.c.account == account, m.c.direction == "in",
                m.c.rfc_message_id.in_(list(rfc_message_ids))).order_by(m.c.first_seq)):
            found.setdefault(row.rfc_message_id or "", row)
        return found

    def received_copies(self, account: str, rfc_message_id: str) -> list[port.MessageRow]:
        """The received messages of `account` carrying this Message-ID, first fetched first."""
        m = t.messages
        return self._messages(select(m).where(
            m.c.account == account, m.c.direction == "in", m.c.rfc_message_id == rfc_message_id
        ).order_by(m.c.first_seq))

    def known_provider_ids(self, account: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        return set(self._all_scalars(select(t.messages.c.provider_id).where(
            t.messages.c.account == account, t.messages.c.provider_id.in_(list(ids)))))

    def _all_scalars(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars().all())

    def claimable(self, account: str, *, limit: int = 100) -> list[port.MessageRow]:
        """Pending messages whose backoff has passed, oldest first."""
        m = t.messages
        now = self.clock()
        return self._messages(select(m).where(
            m.c.account == account, m.c.state == proj.PENDING,
            or_(m.c.next_attempt_at.is_(None), m.c.next_attempt_at <= now),
        ).order_by(m.c.first_seq).limit(limit))

    def next_retry_at(self, account: str) -> datetime | None:
        m = t.messages
        return as_utc(self._all(select(func.min(m.c.next_attempt_at)).where(
            m.c.account == account, m.c.state == proj.PENDING))[0][0])

    def in_flight(self, account: str | None = None) -> list[port.MessageRow]:
        """Messages claimed or processed and not yet acked, released or dead-lettered."""
        m = t.messages
        query = select(m).where(m.c.state.in_(proj.IN_FLIGHT_STATES)).order_by(m.c.first_seq)
        if account is not None:
            query = query.where(m.c.account == account)
        return self._messages(query)

    def unsent_outbox(self, source_key: str) -> list[port.OutboxRow]:
        o = t.outbox
        return self._outbox(select(o).where(o.c.source_key == source_key, o.c.state == "queued")
                         .order_by(o.c.position))

    def outbox_of(self, source_key: str) -> list[port.OutboxRow]:
        o = t.outbox
        return self._outbox(select(o).where(o.c.source_key == source_key).order_by(o.c.position))

    def failed_since(self, since: datetime | None = None, *,
                     account: str | None = None) -> list[port.MessageRow]:
        """Dead-lettered messages, newest change last."""
        m = t.messages
        query = select(m).where(m.c.state == proj.DEAD_LETTERED).order_by(m.c.last_seq)
        if since is not None:
            query = query.where(m.c.updated_at >= since)
        if account is not None:
            query = query.where(m.c.account == account)
        return self._messages(query)

    def account(self, address: str) -> port.AccountRow | None:
        rows = self.accounts(address)
        return rows[0] if rows else None

    def accounts(self, address: str | None = None) -> list[port.AccountRow]:
        query = select(t.accounts).order_by(t.accounts.c.address)
        if address is not None:
            query = query.where(t.accounts.c.address == address)
        return [port.from_mapping(port.AccountRow, r._mapping) for r in self._all(query)]

    def live_runs(self) -> list[port.RunRow]:
        return self._runs(select(t.runs).where(t.runs.c.status == "running"))

    def live_run(self, account: str) -> port.RunRow | None:
        rows = self._runs(select(t.runs).where(t.runs.c.account == account,
                                               t.runs.c.status == "running"))
        return rows[0] if rows else None

    def last_run(self, account: str) -> port.RunRow | None:
        rows = self._runs(select(t.runs).where(t.runs.c.account == account)
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
        (its outbox row says which); a request from `agentmail send` under its sent copy.
        """
        o, m = t.outbox, t.messages
        rows = self._all_scalars(select(o.c.source_key).join(m, m.c.key == o.c.source_key).where(
            o.c.account == account, o.c.rfc_message_id == rfc_message_id).limit(1))
        if rows:  # a handler's message: filed under what it handled
            return rows[0]
        rows = self._all_scalars(select(m.c.key).where(
            m.c.account == account, m.c.direction == "out",
            m.c.rfc_message_id == rfc_message_id).order_by(m.c.first_seq).limit(1))
        return rows[0] if rows else None

    def request_by_idempotency_key(self, account: str, key: str) -> port.OutboxRow | None:
        """The request `agentmail send` journaled with this idempotency key, if any."""
        o = t.outbox
        rows = self._outbox(select(o).where(o.c.account == account, o.c.idempotency_key == key))
        return rows[0] if rows else None

    def queued_requests(self, account: str) -> list[str]:
        """Keys of `agentmail send` requests journaled but not sent (a crash mid-send)."""
        o, m = t.outbox, t.messages
        return self._all_scalars(
            select(o.c.source_key).distinct().outerjoin(m, m.c.key == o.c.source_key).where(
                o.c.account == account, o.c.state == "queued", m.c.key.is_(None)))

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

    def conversation_messages(self, conversation_id: str) -> list[port.MessageRow]:
        """Every copy of every message in a conversation, in journal order."""
        m = t.messages
        return self._messages(select(m).where(m.c.conversation_id == conversation_id)
                         .order_by(m.c.first_seq))

    def run_concurrency(self, run_id: str) -> int | None:
        """How many handler workers a run had, as its `run_started` event says."""
        e = t.events
        rows = self._all(select(e.c.data).where(e.c.run_id == run_id, e.c.kind == ev.RUN_STARTED)
                         .limit(1))
        return json.loads(rows[0][0]).get("concurrency") if rows else None

    def runs_started(self, account: str, *, limit: int = 20) -> list[ev.Event]:
        """The `run_started` events of `account`, newest first."""
        e = t.events
        return [row_event(r) for r in self._all(
            select(e).where(e.c.account == account, e.c.kind == ev.RUN_STARTED)
            .order_by(e.c.seq.desc()).limit(limit))]

    def run_marks_handlers(self, run_id: str) -> bool:
        """Did this run mark its claims as their handlers started (see mark_started)?"""
        e = t.events
        rows = self._all(select(e.c.data).where(e.c.run_id == run_id, e.c.kind == ev.RUN_STARTED)
                         .limit(1))
        return bool(rows) and bool(json.loads(rows[0][0]).get("handler_marks"))

    def run(self, run_id: str) -> port.RunRow | None:
        rows = self._runs(select(t.runs).where(t.runs.c.run_id == run_id))
        return rows[0] if rows else None

    # --- recovery, replay and status -------------------------------------------------------

    def received_matching(self, ident: str, *,
                          account: str | None = None) -> list[port.MessageRow]:
        """Received messages named by a provider id, a message key or an RFC Message-ID
        (with or without <>), oldest first; one per mailbox that received it."""
        m = t.messages
        bare = ident.strip().removeprefix("<").removesuffix(">")
        forms = list(dict.fromkeys([ident.strip(), f"<{bare}>", bare]))
        query = select(m).where(m.c.direction == "in", or_(
            m.c.provider_id == ident, m.c.key == ident, m.c.rfc_message_id.in_(forms)))
        if account is not None:
            query = query.where(m.c.account == account)
        return self._messages(query.order_by(m.c.first_seq))

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
        return row_event(rows[0]) if rows else None
