"""Requests and answers for an outside handler: send once per idempotency key, wait for a
reply, read conversations with what the trust policy found about each message.

A model that retries a tool call must never send twice: every send carries an idempotency
key (by default derived from its arguments). The same key with the same content returns the
original conversation and Message-ID; with other content it is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentmail import errors, policy, screening
from agentmail import message as msg
from agentmail.config import Settings
from agentmail.journal import conversations as conv
from agentmail.journal import events as ev
from agentmail.journal.store import Journal
from agentmail.mailbox.base import Mailbox
from agentmail.services import sending
from agentmail.services.inbox import Inbox

MAX_WAIT_SECONDS = 600.0
DEFAULT_POLL_SECONDS = 1.0  # between two looks at the journal (and mailbox) while waiting


@dataclass(frozen=True)
class Sent:
    """A request sent (or found sent earlier under the same idempotency key)."""

    message_id: str
    provider_id: str
    thread_id: str
    conversation_id: str
    duplicate: bool


def default_idempotency_key(sender: str, to: Sequence[str], subject: str, payload: Any) -> str:
    """The key of a send whose caller gave none: the same arguments give the same key."""
    canonical = json.dumps([sender.lower(), sorted(a.lower() for a in to), subject, payload],
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=repr)
    return "args-" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def send(journal: Journal, mailbox: Mailbox, settings: Settings, *, to: Sequence[str],
         subject: str, payload: Any, idempotency_key: str | None = None) -> Sent:
    """Send a request from `mailbox` once per idempotency key."""
    key = idempotency_key or default_idempotency_key(mailbox.address, to, subject, payload)
    return _send_once(journal, mailbox, settings, to=list(to), subject=subject, payload=payload,
                      idempotency_key=key)


def _send_once(journal: Journal, mailbox: Mailbox, settings: Settings, *, to: list[str],
               subject: str, payload: Any, idempotency_key: str) -> Sent:
    """One send per key: journaled before it goes out, found in the mailbox after a crash."""
    done = sending.send_request(journal, mailbox, settings, to=to, subject=subject,
                                payload=payload, idempotency_key=idempotency_key)
    return Sent(done.message_id, done.provider_id, done.thread_id, done.conversation_id,
                duplicate=done.duplicate)


def message_id_for_key(address: str, idempotency_key: str) -> str:
    """The Message-ID a request from `address` sent under `idempotency_key` gets."""
    return sending.message_id_for_key(address, idempotency_key)


def sent_under_key(journal: Journal, address: str, idempotency_key: str) -> str | None:
    """The key of the sent copy of what `address` sent under `idempotency_key`, if it went out."""
    return journal.sent_message_source(address, message_id_for_key(address, idempotency_key))


# --- reading conversations -----------------------------------------------------------------

@dataclass(frozen=True)
class Trust:
    """What the trust policy found about a received message."""

    accepted: bool
    reason: str | None  # the rejection reason, or why replies to it are blocked
    authenticated: bool | None  # None: not checked (no authserv_id configured)
    auth_results: dict[str, list[str]] | None


def screened(message: conv.ConversationMessage, settings: Settings, journal: Journal
             ) -> tuple[Trust | None, msg.Message | None]:
    """The policy's findings for the received copy of `message`, and that copy as parsed
    from the bytes fetched (None, None for mail we sent; a parse of None once the body is
    compacted away).

    Needs `message.events` (read with `with_events=True`): a rejection is read from its
    `rejected` event; an accepted message is screened again as `agentmail run` screens it.
    """
    fetched = next((e for e in message.events if e.kind == ev.FETCHED), None)
    if fetched is None:
        return None, None
    d = fetched.data
    trust_policy = screening.trust_policy(settings)
    raw = journal.body(fetched.message_key) if fetched.message_key else None
    parsed = msg.parse(raw, account=fetched.account, provider_id=d["provider_id"],
                       thread_id=d.get("thread_id"), limits=trust_policy.limits) \
        if raw is not None else None
    rejected = next((e for e in message.events if e.kind == ev.REJECTED), None)
    if rejected is not None:
        auth = rejected.data.get("details", {}).get("auth") or {}
        return Trust(False, rejected.data.get("reason"), auth.get("passed"),
                     auth.get("results")), parsed
    if parsed is None:  # accepted once; its body was compacted away, nothing to screen again
        return Trust(True, None, None, None), None
    return trust_of_verdict(policy.evaluate(parsed, trust_policy)), parsed


def trust_of_verdict(verdict: policy.Verdict) -> Trust:
    auth = verdict.details.get("auth") or {}
    return Trust(verdict.accepted, verdict.reason,
                 auth.get("passed") if auth.get("checked") else None, auth.get("results"))


def conversation(journal: Journal, ident: str, *, visible_to: Sequence[str] = ()
                 ) -> tuple[conv.ConversationSummary, list[conv.ConversationMessage]]:
    """One conversation by any id `agentmail history --thread` accepts, with its messages.

    With `visible_to`, only a conversation one of those mailboxes takes part in: the
    journal may hold other agents' mail too, which is not theirs to read.
    """
    cid = conv.resolve_one(journal, ident)
    messages = conv.conversation_messages(journal, cid, with_events=True)
    if visible_to and not _participants(messages, visible_to):
        raise errors.NotFound(f"no conversation matches {ident!r} among the conversations of "
                              f"{', '.join(visible_to)}")
    return conv.summary(journal, cid), messages


def list_conversations(journal: Journal, *, visible_to: Sequence[str], limit: int
                       ) -> list[conv.ConversationSummary]:
    """Conversations newest first: of the `visible_to` mailboxes, or all when it is empty."""
    if not visible_to:
        return conv.list_conversations(journal, limit=limit)
    found: dict[str, conv.ConversationSummary] = {}
    for address in visible_to:
        for s in conv.list_conversations(journal, email=address, limit=limit):
            found.setdefault(s.id, s)
    return sorted(found.values(), key=lambda s: s.last_seq, reverse=True)[:limit]


# --- waiting for a reply -------------------------------------------------------------------

@dataclass(frozen=True)
class Waited:
    """New messages of a conversation, and the cursor to wait from next time."""

    conversation_id: str
    messages: list[conv.ConversationMessage]
    after_seq: int  # the cursor this wait started from
    cursor: int  # pass as after_seq to the next wait
    timed_out: bool
    polled: tuple[str, ...]  # mailboxes this process polled while waiting


def _first_seq(m: conv.ConversationMessage) -> int:
    return min(c.first_seq for c in m.copies)


def _arrival_seq(m: conv.ConversationMessage, own: set[str]) -> int:
    """When `m` reached us: its first copy in a served mailbox (any copy when none served)."""
    copies = [c for c in m.copies if c.direction == "in" and c.account.lower() in own] \
        if own else m.copies
    return min((c.first_seq for c in copies), default=0)


def _arrivals(messages: Sequence[conv.ConversationMessage], own: set[str],
              after: int) -> list[conv.ConversationMessage]:
    """Messages from others that reached a served mailbox after `after`. A reply counts
    once it is received here, screened by this mailbox's trust policy, not when another
    agent on the same journal sent it."""
    found = [m for m in messages
             if (m.sender or "").lower() not in own and _arrival_seq(m, own) > after]
    return sorted(found, key=lambda m: _arrival_seq(m, own))


def _own_last_seq(messages: Sequence[conv.ConversationMessage], own: set[str]) -> int:
    """Where a wait starts by default: after the newest message we sent in the conversation
    (so a reply that came before the wait began still counts); 0 when we sent none."""
    return max((_first_seq(m) for m in messages if (m.sender or "").lower() in own), default=0)


def wait_for_reply(inbox: Inbox, ident: str, *, timeout_s: float, after_seq: int | None = None,
                   poll_seconds: float = DEFAULT_POLL_SECONDS,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> Waited:
    """Block until the conversation named by `ident` has a message from someone else that
    reached a served mailbox after `after_seq` (entered the journal, when none is served),
    or `timeout_s` passes.

    Follows the journal; the served mailboxes taking part in the conversation that no
    other run polls are polled from here (fetched and screened as `agentmail run` would).
    """
    if not 0 <= timeout_s <= MAX_WAIT_SECONDS:
        raise errors.UsageError(f"timeout_s must be between 0 and {MAX_WAIT_SECONDS:.0f}, "
                                f"got {timeout_s}")
    journal = inbox.journal
    own = {a.lower() for a in inbox.addresses}
    summary, messages = conversation(journal, ident, visible_to=inbox.addresses)
    cid = summary.id
    start = after_seq if after_seq is not None else (
        _own_last_seq(messages, own) or conv.last_seq(journal))
    deadline = clock() + timeout_s
    polled: set[str] = set()
    while True:
        new = _arrivals(messages, own, start)
        if new or clock() >= deadline:
            cursor = max([start, *(_arrival_seq(m, own) for m in new)])
            return Waited(cid, new, start, cursor, timed_out=not new, polled=tuple(sorted(polled)))
        for address in _participants(messages, inbox.addresses):
            if inbox.poll(address):
                polled.add(address)
        sleep(max(0.0, min(poll_seconds, deadline - clock())))
        # The id may now name a merged conversation: resolve it again each round.
        cid = conv.resolve_one(journal, ident)
        messages = conv.conversation_messages(journal, cid, with_events=True)


def _participants(messages: Sequence[conv.ConversationMessage],
                  served: Sequence[str]) -> list[str]:
    """The served mailboxes that sent or receive mail in the conversation."""
    people = {p.lower() for m in messages for p in [m.sender or "", *m.recipients]}
    people |= {c.account.lower() for m in messages for c in m.copies}
    return [a for a in served if a.lower() in people]
