"""The journal as the pipeline sees it: frozen rows and the questions it asks.

The pipeline, recovery and services code against `JournalPort`; `journal.store.Journal`
(SQLAlchemy) implements it. Rows are frozen dataclasses, so nothing above the store holds
a database row or can write through one. No SQLAlchemy here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from agentmail.journal import events as ev
from agentmail.journal.bodies import Body

R = TypeVar("R")


def _utc(value: Any) -> Any:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def from_mapping(cls: type[R], row: Mapping[Any, Any]) -> R:
    """Build a row dataclass from a database row, ignoring columns it does not know."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _utc(v) for k, v in row.items() if k in names})


@dataclass(frozen=True)
class MessageRow:
    """One message in one mailbox: a received copy (direction "in") or our sent copy."""

    key: str
    account: str
    provider_id: str
    direction: str
    state: str
    thread_id: str | None = None
    rfc_message_id: str | None = None
    in_reply_to: str | None = None
    references: str = "[]"
    sender: str | None = None
    recipients: str = "[]"
    subject: str | None = None
    sent_at: datetime | None = None
    payload: str | None = None
    attempts: int = 0
    lease_run_id: str | None = None
    lease_token: int = 0
    lease_expires_at: datetime | None = None
    handler_started_at: datetime | None = None
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    conversation_id: str | None = None
    duplicate_of: str | None = None
    first_seq: int = 0
    last_seq: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True)
class OutboxRow:
    """A message a handler (or `agentmail send`) produced, from journaling until sent."""

    outbox_id: str
    account: str
    source_key: str
    position: int
    rfc_message_id: str
    recipients: str
    raw: str
    state: str
    created_seq: int
    thread_id: str | None = None
    subject: str | None = None
    provider_id: str | None = None
    sent_at: datetime | None = None
    idempotency_key: str | None = None
    content_digest: str | None = None


@dataclass(frozen=True)
class RunRow:
    run_id: str
    account: str
    started_at: datetime
    heartbeat_at: datetime
    status: str
    host: str | None = None
    pid: int | None = None
    expires_at: datetime | None = None
    progress_at: datetime | None = None
    stopped_at: datetime | None = None
    summary: str | None = None


@dataclass(frozen=True)
class AccountRow:
    address: str
    first_seq: int
    last_seq: int
    history_id: str | None = None
    last_sync_at: datetime | None = None


@dataclass(frozen=True)
class Claim:
    """A lease on one message: every change the holder makes names `token`.

    `attempt` is the attempt this claim is (1 for the first); `lease_until` the deadline
    on the database's clock, extended by the holder's heartbeat while it makes progress.
    """

    key: str
    account: str
    provider_id: str
    conversation_id: str | None
    attempt: int
    token: int
    run_id: str
    lease_until: datetime


class JournalPort(Protocol):
    """What the pipeline, recovery and replay need of the journal."""

    clock: Callable[[], datetime]

    def append(self, *events: ev.Event, bodies: Sequence[Body] = ()) -> list[ev.Event]: ...

    def body(self, key: str) -> bytes | None: ...

    def claim_many(self, keys: Sequence[str], *, run_id: str, lease_seconds: float,
                   data: dict[str, Any] | None = None) -> list[Claim]: ...

    def take_over(self, row: MessageRow, *, run_id: str, lease_seconds: float,
                  **data: Any) -> Claim: ...

    def renew(self, claim: Claim, lease_seconds: float) -> Claim: ...

    def mark_started(self, claim: Claim, *, running: bool = True) -> None: ...

    def message(self, key: str) -> MessageRow | None: ...

    def claimable(self, account: str, *, limit: int = 100) -> list[MessageRow]: ...

    def in_flight(self, account: str | None = None) -> list[MessageRow]: ...

    def unsent_outbox(self, source_key: str) -> list[OutboxRow]: ...

    def events_of_message(self, key: str) -> list[ev.Event]: ...

    def account(self, address: str) -> AccountRow | None: ...

    def known_provider_ids(self, account: str, ids: Sequence[str]) -> set[str]: ...

    def run(self, run_id: str) -> RunRow | None: ...

    def run_concurrency(self, run_id: str) -> int | None: ...

    def run_marks_handlers(self, run_id: str) -> bool: ...

    def replies_in_conversation(self, account: str, conversation_id: str) -> int: ...

    def rejected_with_queued_outbox(self, account: str) -> list[str]: ...

    def queued_requests(self, account: str) -> list[str]: ...

    def received_copies(self, account: str, rfc_message_id: str) -> list[MessageRow]: ...

    def first_copies(self, account: str,
                     rfc_message_ids: Sequence[str]) -> dict[str, MessageRow]: ...

    def sent_message_source(self, account: str, rfc_message_id: str) -> str | None: ...

    def conversation_of_ids(self, rfc_message_ids: Sequence[str]) -> str | None: ...
