"""Event kinds of the journal and the record that carries them.

Each event is one step of one message (or of a run): past-tense kind, the
account and run it belongs to, and a JSON `data` document whose schema version
travels inside it as ``"v"`` so old events can be upcast on read, never rewritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DATA_VERSION = 1

# Runs and accounts
RUN_STARTED = "run_started"
RUN_HEARTBEAT = "run_heartbeat"  # only in older journals: beats now live in the runs row
RUN_STOPPED = "run_stopped"
SYNCED = "synced"  # the account's history cursor moved
# One message's life, in the order the write-ahead rule appends them
FETCHED = "fetched"
CLAIMED = "claimed"
PROCESSED = "processed"
FAILED = "failed"
SENT = "sent"
ACKED = "acked"
RELEASED = "released"
DEAD_LETTERED = "dead_lettered"
REJECTED = "rejected"
SEND_REQUESTED = "send_requested"  # `agentmail send`: a request journaled before it is sent
DUPLICATE = "duplicate"  # a second delivery of a message already received: acked, not handled
LOOP_GUARDED = "loop_guarded"
DELIVERY_FAILED = "delivery_failed"  # a bounce linked to a message we sent
# Recovery and operator actions
RECONCILED = "reconciled"
REPLAY_REQUESTED = "replay_requested"
# Outgoing mail held for a person (`agentmail mcp --require-approval`)
APPROVAL_REQUESTED = "approval_requested"
APPROVAL_DECIDED = "approval_decided"  # approved or declined, by whom
APPROVAL_DONE = "approval_done"  # carried out (sent), or found impossible

KINDS = frozenset({
    RUN_STARTED, RUN_HEARTBEAT, RUN_STOPPED, SYNCED, FETCHED, CLAIMED, PROCESSED, FAILED,
    SENT, ACKED, RELEASED, DEAD_LETTERED, REJECTED, LOOP_GUARDED, DELIVERY_FAILED,
    RECONCILED, REPLAY_REQUESTED, DUPLICATE, SEND_REQUESTED, APPROVAL_REQUESTED,
    APPROVAL_DECIDED, APPROVAL_DONE,
})


def message_key(account: str, provider_id: str) -> str:
    """The stable key of one message in one mailbox; handlers use it as an idempotency key."""
    return f"{account}:{provider_id}"


@dataclass(frozen=True)
class Event:
    """One journal entry. `seq` and `at` are assigned when it is appended."""

    kind: str
    account: str
    data: dict[str, Any] = field(default_factory=dict)
    message_key: str | None = None
    run_id: str | None = None
    attempt: int | None = None
    seq: int | None = None
    at: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")

    def encoded_data(self) -> str:
        return json.dumps({"v": DATA_VERSION, **self.data}, sort_keys=True, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape printed by `agentmail events --json`."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat() if self.at else None,
            "account": self.account,
            "run_id": self.run_id,
            "message_key": self.message_key,
            "kind": self.kind,
            "attempt": self.attempt,
            "data": self.data,
        }


def upcast(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored data document to the current version (only version 1 exists so far)."""
    data = dict(data)
    data.pop("v", None)
    return data
