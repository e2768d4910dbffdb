"""Named questions about outgoing mail held for approval (`agentmail outbox`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from agentmail.journal import tables as t
from agentmail.journal.store import Journal, as_utc

PENDING = "pending"
APPROVED = "approved"
DECLINED = "declined"
DONE = "done"
FAILED = "failed"
OPEN_STATES = (PENDING, APPROVED)  # not carried out yet


@dataclass(frozen=True)
class Approval:
    """One held send or reply and what became of it."""

    id: str
    account: str
    action: str  # "send" | "reply"
    message_key: str | None
    request: dict[str, Any]
    state: str
    decided_by: str | None
    note: str | None
    result: Any
    created_seq: int
    updated_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "account": self.account, "action": self.action,
                "message_key": self.message_key, "request": self.request, "state": self.state,
                "decided_by": self.decided_by, "note": self.note, "result": self.result,
                "created_seq": self.created_seq,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


def _approval(row: Any) -> Approval:
    return Approval(id=row.id, account=row.account, action=row.action,
                    message_key=row.message_key, request=json.loads(row.request),
                    state=row.state, decided_by=row.decided_by, note=row.note,
                    result=json.loads(row.result) if row.result else None,
                    created_seq=row.created_seq, updated_at=as_utc(row.updated_at))


def get(journal: Journal, approval_id: str) -> Approval | None:
    with journal.engine.connect() as conn:
        row = conn.execute(select(t.approvals).where(t.approvals.c.id == approval_id)).first()
    return _approval(row) if row is not None else None


def listing(journal: Journal, *, states: Sequence[str] | None = None,
            accounts: Sequence[str] | None = None) -> list[Approval]:
    """Approvals, oldest first; only those in `states` / of `accounts` when given."""
    a = t.approvals
    query = select(a).order_by(a.c.created_seq)
    if states is not None:
        query = query.where(a.c.state.in_(list(states)))
    if accounts is not None:
        query = query.where(a.c.account.in_(list(accounts)))
    with journal.engine.connect() as conn:
        return [_approval(r) for r in conn.execute(query)]


def open_for_message(journal: Journal, message_key: str) -> Approval | None:
    """The reply to `message_key` that waits for a person or to be carried out, if any."""
    a = t.approvals
    with journal.engine.connect() as conn:
        row = conn.execute(select(a).where(a.c.message_key == message_key,
                                           a.c.state.in_(OPEN_STATES)).limit(1)).first()
    return _approval(row) if row is not None else None
