"""`require_approval`: outgoing mail an outside handler asks for waits for a person.

Under `agentmail mcp --require-approval`, `send` and `reply` do not send: they journal an
`approval_requested` (after the same outgoing checks a send makes, so what is held could
go out). A person lists them with `agentmail outbox` and decides with `agentmail approve
ID` (or `--decline`), journaled as `approval_decided`. The MCP server, which holds the
mailbox and the claims, carries out what was approved (the send or the reply, through the
usual exactly-once paths) and journals `approval_done`; a declined reply's message goes
back to the queue for the handler to answer otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from agentmail import errors, records
from agentmail import message as msg
from agentmail.config import Settings
from agentmail.journal import approvals
from agentmail.journal import events as ev
from agentmail.journal import projections as proj
from agentmail.journal.store import Journal
from agentmail.mailbox.base import Mailbox
from agentmail.screening import Screen
from agentmail.services import exchange
from agentmail.services.inbox import ClaimNotHeld, Inbox

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0  # how often the server looks for decisions


@dataclass(frozen=True)
class Held:
    """Outgoing mail waiting for a person: its approval id and the ids it will carry."""

    approval_id: str
    message_id: str
    conversation_id: str | None
    duplicate: bool  # the same request was already held (or sent)
    sent: bool = False  # it already went out earlier under this key


def _approval_id(*parts: str) -> str:
    return "ap" + hashlib.sha256("|".join(parts).encode("utf-8", "surrogatepass")
                                 ).hexdigest()[:14]


def hold_send(journal: Journal, mailbox: Mailbox, settings: Settings, *, to: list[str],
              subject: str, payload: Any, idempotency_key: str) -> Held:
    """Hold a request for approval; the same key and content give the same approval."""
    address = mailbox.address
    message_id = exchange.message_id_for_key(address, idempotency_key)
    sent = exchange.sent_under_key(journal, address, idempotency_key)
    if sent is not None:  # approved and sent already: a retry gets the original
        done = exchange.send(journal, mailbox, settings, to=to, subject=subject,
                             payload=payload, idempotency_key=idempotency_key)
        return Held(_approval_id(address, "send", idempotency_key), done.message_id,
                    done.conversation_id, duplicate=True, sent=True)
    screen = Screen(journal, settings, address=address, run_id="")
    out = msg.compose_request(from_addr=address, to=to, subject=subject, payload=payload,
                              message_id=message_id, max_recipients=settings.max_recipients,
                              limits=screen.limits)
    screen.check_outgoing([out])
    request = {"to": [*out.to, *out.cc], "subject": out.subject,
               "payload": records.json_safe(payload), "idempotency_key": idempotency_key,
               "message_id": message_id}
    # A new request starts its own conversation, whose id follows from its Message-ID.
    conversation_id = proj.conversation_id_for(message_id)
    return _hold(journal, address, "send", None, request,
                 _approval_id(address, "send", idempotency_key), message_id, conversation_id)


def hold_reply(inbox: Inbox, claim_id: str, payload: Any, *, allow_auto_reply: bool) -> Held:
    """Hold the reply to a claimed message for approval; the claim stays held meanwhile."""
    with inbox.holding(claim_id) as (run, row):
        _, outbox = run.pipeline.compose_answer(row, payload, allow_auto_reply=allow_auto_reply)
        reply = outbox.items[0]
        request = {"claim_id": claim_id, "to": [*reply.to, *reply.cc],
                   "subject": reply.subject, "payload": records.json_safe(payload),
                   "allow_auto_reply": allow_auto_reply, "message_id": reply.message_id}
        return _hold(inbox.journal, row.account, "reply", row.key, request,
                     _approval_id(row.key, "reply", str(row.attempts)), reply.message_id,
                     row.conversation_id)


def _hold(journal: Journal, account: str, action: str, key: str | None,
          request: dict[str, Any], approval_id: str, message_id: str,
          conversation_id: str | None) -> Held:
    earlier = approvals.get(journal, approval_id)
    if earlier is None and key is not None:
        earlier = approvals.open_for_message(journal, key)
    if earlier is not None:
        if earlier.request != request:
            raise errors.UsageError(
                f"approval {earlier.id} already holds another {action} ({earlier.state}); "
                "nothing new was held. Wait for the person's decision "
                f"(agentmail outbox shows it){'' if action == 'reply' else ', or use a new key'}")
        return Held(earlier.id, message_id, conversation_id, duplicate=True)
    journal.append(ev.Event(ev.APPROVAL_REQUESTED, account, message_key=key, data={
        "approval_id": approval_id, "action": action, "request": request}))
    return Held(approval_id, message_id, conversation_id, duplicate=False)


def decide(journal: Journal, approval_id: str, *, approve: bool, by: str,
           note: str | None = None) -> approvals.Approval:
    """A person's decision on a held message (only a pending one can be decided)."""
    found = approvals.get(journal, approval_id.strip())
    if found is None:
        raise errors.NotFound(f"no approval {approval_id!r}: `agentmail outbox` lists them")
    if found.state != approvals.PENDING:
        raise errors.UsageError(f"approval {found.id} is {found.state} already")
    journal.append(ev.Event(ev.APPROVAL_DECIDED, found.account, message_key=found.message_key,
                            data={"approval_id": found.id, "by": by, "note": note,
                                  "decision": approvals.APPROVED if approve
                                  else approvals.DECLINED}))
    decided = approvals.get(journal, found.id)
    assert decided is not None  # just journaled
    return decided


def carry_out(inbox: Inbox) -> list[approvals.Approval]:
    """Send what was approved for the mailboxes `inbox` serves; give back the messages of
    declined replies. Returns the approvals finished now (done or failed)."""
    journal = inbox.journal
    finished = []
    for item in approvals.listing(journal, states=[approvals.APPROVED], accounts=inbox.addresses):
        try:
            result = _carry_out_one(inbox, item)
        except errors.MailboxUnavailable as exc:  # try again on the next look
            log.warning("approval %s: not carried out yet: %s", item.id, exc)
            continue
        except errors.AgentmailError as exc:
            result = {"ok": False, "error": str(exc)}
        journal.append(ev.Event(ev.APPROVAL_DONE, item.account, message_key=item.message_key,
                                data={"approval_id": item.id, "ok": result.pop("ok"),
                                      "result": result}))
        finished.append(item)
    for item in approvals.listing(journal, states=[approvals.DECLINED], accounts=inbox.addresses):
        _give_back_declined(inbox, item)
    return finished


def _carry_out_one(inbox: Inbox, item: approvals.Approval) -> dict[str, Any]:
    r = item.request
    if item.action == "send":
        with inbox.using(item.account) as mailbox:
            sent = exchange.send(inbox.journal, mailbox, inbox.settings, to=r["to"],
                                 subject=r["subject"], payload=r["payload"],
                                 idempotency_key=r["idempotency_key"])
        return {"ok": True, "message_id": sent.message_id,
                "conversation_id": sent.conversation_id}
    assert item.message_key is not None  # a reply names the message it answers
    try:
        done = inbox.answer_message(item.message_key, r["payload"],
                                    allow_auto_reply=bool(r.get("allow_auto_reply")))
    except ClaimNotHeld as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "message_id": done.message_id, "sent": done.sent,
            "suppressed": list(done.suppressed)}


def _give_back_declined(inbox: Inbox, item: approvals.Approval) -> None:
    """A declined reply's message returns to the queue, once (while this run holds it)."""
    if item.action != "reply" or item.message_key is None:
        return
    row = inbox.journal.message(item.message_key)
    if row is None or row.state != proj.CLAIMED:
        return
    claim_id = item.request.get("claim_id", "")
    try:
        inbox.release(claim_id, reason=f"reply declined by {item.decided_by}: "
                      f"{item.note or 'no reason given'}")
    except ClaimNotHeld:
        pass  # already given back, or the claim lapsed and went back by itself


class Watcher(threading.Thread):
    """Carries out decisions as people make them, while the server runs."""

    def __init__(self, inbox: Inbox, period: float = WATCH_SECONDS) -> None:
        super().__init__(name="approvals", daemon=True)
        self.inbox = inbox
        self.period = period
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.period):
            try:
                carry_out(self.inbox)
            except Exception as exc:  # retried on the next look; the journal keeps the state
                log.warning("approvals: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=10)
