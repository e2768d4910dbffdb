"""`agentmail send`: start a conversation with a JSON request, journaled before it is sent.

The request is journaled (`send_requested`, with its final bytes, in the outbox) before
anything touches the network, then sent through the pipeline's own send path, which
looks in the mailbox first when an earlier try's outcome is unknown. So:

- a crash mid-send leaves a queued request that the next `agentmail send` with the same
  key, or the next `agentmail run` of the mailbox, finishes without sending it twice;
- `idempotency_key`: the same key with the same content returns the original request
  (nothing sent again); the same key with other content is refused (exit 1). Its
  Message-ID derives from the key, so "did it go out?" can be answered from the mailbox;
- the same settings as every other outgoing path apply: `allow_to`, `max_recipients`,
  the JSON limits.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from agentmail import errors, records
from agentmail import message as msg
from agentmail.agent import Agent
from agentmail.config import Settings
from agentmail.journal import events as ev
from agentmail.journal.store import Journal
from agentmail.mailbox.base import Mailbox
from agentmail.pipeline import CycleReport, Pipeline
from agentmail.screening import Screen, parse_limits

MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class SendResult:
    message_id: str
    provider_id: str
    thread_id: str
    conversation_id: str
    duplicate: bool = False  # an earlier send with this idempotency key; nothing sent now


def parse_payload(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.UsageError(f"{source} is not valid JSON (line {exc.lineno} column "
                                f"{exc.colno}: {exc.msg}); nothing was sent") from exc


def content_digest(to: list[str], subject: str, payload: Any) -> str:
    """What "the same content" means for an idempotency key: recipients, subject, payload."""
    doc = json.dumps({"to": sorted(a.strip().lower() for a in to), "subject": subject,
                      "payload": payload}, sort_keys=True, separators=(",", ":"),
                     ensure_ascii=False)
    return hashlib.sha256(doc.encode("utf-8", "surrogatepass")).hexdigest()


def message_id_for_key(account: str, idempotency_key: str) -> str:
    """The Message-ID a request sent under `idempotency_key` gets: the same on every retry,
    so whether it went out can be asked of the mailbox."""
    return msg.make_message_id(f"idempotency:{idempotency_key}", account, 0)


def request_key(account: str, outbox_id: str) -> str:
    """The journal key a request is filed under until it is sent (it names no mailbox copy)."""
    return ev.message_key(account, f"request:{outbox_id}")


def send_request(journal: Journal, mailbox: Mailbox, settings: Settings | None = None, *,
                 to: list[str], subject: str, payload: Any,
                 idempotency_key: str | None = None) -> SendResult:
    settings = settings or Settings()
    account = mailbox.address
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_CHARS:
        raise errors.UsageError(f"an idempotency key has 1 to {MAX_KEY_CHARS} characters")
    digest = content_digest(to, subject, payload)
    from agentmail.services.runner import crash_hook  # the testing hook `crash_at`

    pipeline = Pipeline(journal=journal, mailbox=mailbox, agent=Agent(account),
                        settings=settings, run_id=f"send-{uuid.uuid4().hex[:24]}",
                        checkpoint=crash_hook(settings.crash_at))
    if idempotency_key is not None:
        earlier = journal.request_by_idempotency_key(account, idempotency_key)
        if earlier is not None:
            if earlier.content_digest != digest:
                raise errors.IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} was used for a different request "
                    f"({earlier.rfc_message_id}); nothing was sent")
            return _finish(journal, pipeline, earlier.source_key, duplicate=True)
    message_id = None
    if idempotency_key is not None:
        message_id = message_id_for_key(account, idempotency_key)
    out = msg.compose_request(from_addr=account, to=to, subject=subject, payload=payload,
                              message_id=message_id, max_recipients=settings.max_recipients,
                              limits=parse_limits(settings))
    Screen(journal, settings, address=account, run_id=pipeline.run_id).check_outgoing([out])
    key = request_key(account, out.outbox_id)
    point = mailbox.history_point()  # sends happen after it: recovery looks from here
    try:
        journal.append(ev.Event(ev.SEND_REQUESTED, account, message_key=key,
                                run_id=pipeline.run_id, data={
                                    "idempotency_key": idempotency_key, "content_digest": digest,
                                    "history_point": point,
                                    "outgoing": [records.outgoing_data(out)]}))
    except errors.JournalConflict:  # the same key, journaled by a concurrent send just now
        if idempotency_key is None:
            raise
        return send_request(journal, mailbox, settings, to=to, subject=subject,
                            payload=payload, idempotency_key=idempotency_key)
    return _finish(journal, pipeline, key, duplicate=False)


def _finish(journal: Journal, pipeline: Pipeline, key: str, *, duplicate: bool) -> SendResult:
    """Send the request filed under `key` unless it is out already; its result."""
    queued = journal.unsent_outbox(key)
    if queued:
        report = CycleReport()
        point = pipeline.history_point_of(key)
        # Sent and not journaled (a crash), or under this key from elsewhere: with a key,
        # look in the mailbox first (by its Message-ID); without one it cannot have gone out.
        since = point if duplicate or journal.outbox_of(key)[0].idempotency_key else None
        if not pipeline.send_outbox(key, report, since_history_id=since, history_point=point):
            raise errors.MailboxUnavailable(
                "; ".join(report.errors) or "the request could not be sent yet; it is "
                "journaled and goes out with the next `agentmail send` of the same key or "
                "`agentmail run` of this mailbox")
    sent = journal.outbox_of(key)[0]
    assert sent.provider_id is not None  # state sent: the provider's id was journaled with it
    row = journal.message(ev.message_key(sent.account, sent.provider_id))
    assert row is not None and row.conversation_id  # the sent event adds the sent copy
    return SendResult(sent.rfc_message_id, sent.provider_id, row.thread_id or "",
                      row.conversation_id, duplicate=duplicate and not queued)
