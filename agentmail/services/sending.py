"""`agentmail send`: start a conversation with a JSON request, journaled like every send."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentmail import errors
from agentmail import message as msg
from agentmail.journal import events as ev
from agentmail.journal.store import Journal
from agentmail.mailbox.base import Mailbox
from agentmail.mailbox.delivery import send_exactly_once


@dataclass(frozen=True)
class SendResult:
    message_id: str
    provider_id: str
    thread_id: str
    conversation_id: str


def parse_payload(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.UsageError(f"{source} is not valid JSON (line {exc.lineno} column "
                                f"{exc.colno}: {exc.msg}); nothing was sent") from exc


def send_request(journal: Journal, mailbox: Mailbox, *, to: list[str], subject: str,
                 payload: Any) -> SendResult:
    out = msg.compose_request(from_addr=mailbox.address, to=to, subject=subject, payload=payload)
    ref, recovered = send_exactly_once(mailbox, out.raw, None, out.message_id, out.outbox_id)
    key = ev.message_key(mailbox.address, ref.id)
    journal.append(ev.Event(ev.SENT, mailbox.address, message_key=key, data={
        "outbox_id": None, "provider_id": ref.id, "thread_id": ref.thread_id,
        "message_id": out.message_id, "in_reply_to": None, "references": [],
        "sender": mailbox.address, "recipients": [*out.to, *out.cc], "subject": out.subject,
        "payload": payload, "recovered": recovered, "auto_submitted": out.auto_submitted}))
    row = journal.message(key)
    assert row is not None  # the sent event just journaled adds the sent copy under `key`
    return SendResult(out.message_id, ref.id, ref.thread_id, row.conversation_id)
