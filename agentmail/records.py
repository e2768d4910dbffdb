"""What the journal records of a message: the JSON shapes of `fetched` and outgoing data.

Raw bytes travel base64url-encoded so a crashed run's successor can parse or send them
again; anything a handler returns that JSON cannot hold is kept as its repr.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from agentmail import message as msg
from agentmail.mailbox import base as mb


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode("ascii"))


def json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def fetched_data(message: msg.Message, raw: mb.RawMessage) -> dict[str, Any]:
    """The `fetched` event's data: the parsed fields (the raw bytes go to the body table)."""
    return {
        "provider_id": raw.id, "thread_id": raw.thread_id, "labels": list(raw.label_ids),
        "message_id": message.message_id, "in_reply_to": message.in_reply_to,
        "references": list(message.references), "sender": message.sender,
        "recipients": [*message.to, *message.cc], "subject": message.subject,
        "date": message.date.isoformat() if message.date else None,
        "payload": message.payload, "auto_submitted": message.auto_submitted,
        "size": message.size,
    }


def outgoing_data(o: msg.Outgoing) -> dict[str, Any]:
    """One outgoing message as `processed` (or `rejected`) journals it, raw bytes included."""
    return {
        "outbox_id": o.outbox_id, "message_id": o.message_id, "thread_id": o.thread_id,
        "recipients": [*o.to, *o.cc], "subject": o.subject, "in_reply_to": o.in_reply_to,
        "references": list(o.references), "auto_submitted": o.auto_submitted,
        "payload": json_safe(o.payload), "raw": b64(o.raw),
    }
