"""Policy at the pipeline's edges: what received mail is refused, what may be answered,
what outgoing mail may go. Decisions come from the pure `policy` module; this class adds
what they need from the journal (conversation reply counts, the messages we sent) and turns
them into journal events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agentmail import errors, policy, records
from agentmail import message as msg
from agentmail.config import Settings
from agentmail.journal import events as ev
from agentmail.journal.port import JournalPort

log = logging.getLogger(__name__)

ERROR_REPLY_SALT = "error_reply"  # keeps error replies' Message-IDs apart from the handler's
ERROR_TEXTS = {
    "invalid_json": "the message body is not valid JSON",
    "json_too_deep": "the JSON payload is nested too deeply",
    "too_large": "the message or its JSON payload is too large",
}


def parse_limits(settings: Settings) -> msg.ParseLimits:
    """The bounds on parsing received mail, from the `max_*` settings."""
    for name in ("max_message_bytes", "max_json_bytes", "max_json_depth", "max_references",
                 "max_header_line", "max_mime_parts", "max_mime_depth", "max_recipients"):
        if getattr(settings, name) < 1:
            raise errors.ConfigError(f"{name} must be at least 1, got {getattr(settings, name)}")
    return msg.ParseLimits(
        max_json_bytes=settings.max_json_bytes, max_json_depth=settings.max_json_depth,
        max_references=settings.max_references, max_header_line=settings.max_header_line,
        max_parts=settings.max_mime_parts, max_mime_depth=settings.max_mime_depth)


def trust_policy(settings: Settings) -> policy.TrustPolicy:
    return policy.TrustPolicy(
        allow_from=settings.allow_from, deny_from=settings.deny_from,
        authserv_id=settings.authserv_id, require_auth=settings.require_auth,
        reject_non_json=settings.reject_non_json,
        max_replies_per_conversation=settings.max_replies_per_conversation,
        max_size=settings.max_message_bytes, limits=parse_limits(settings),
        error_replies=settings.error_replies, allow_to=settings.allow_to,
        answer_agent_requests=settings.answer_agent_requests,
    )


class Screen:
    """The trust policy of one mailbox's run, applied with what the journal knows."""

    def __init__(self, journal: JournalPort, settings: Settings, *, address: str,
                 run_id: str) -> None:
        self.journal = journal
        self.settings = settings
        self.address = address
        self.run_id = run_id
        self.policy = trust_policy(settings)
        self.limits = self.policy.limits

    def rejection(self, message: msg.Message, verdict: policy.Verdict,
                  raw: bytes) -> list[ev.Event]:
        """`rejected` (with an error reply when one is due), plus `delivery_failed` for a
        bounce of a message this mailbox sent."""
        data: dict[str, Any] = {"reason": verdict.reason,
                                "details": records.json_safe(verdict.details)}
        extra: list[ev.Event] = []
        target = verdict.details.get("bounce_target") if verdict.reason == "bounce" else None
        source = self.journal.sent_message_source(self.address, target) if target else None
        if source is not None:
            extra.append(ev.Event(ev.DELIVERY_FAILED, self.address, message_key=source,
                                  run_id=self.run_id, data={
                                      "bounce_key": message.key, "message_id": target,
                                      "bounce_sender": message.sender,
                                      "diagnostic": policy.bounce_diagnostic(raw)}))
        elif verdict.may_reply:
            reply = self.error_reply(message, verdict)
            if reply is not None:
                account = self.journal.account(self.address)
                data["history_point"] = account.history_id if account else None
                data["outgoing"] = [records.outgoing_data(reply)]
        return [ev.Event(ev.REJECTED, self.address, message_key=message.key, run_id=self.run_id,
                         data=data), *extra]

    def error_reply(self, message: msg.Message, verdict: policy.Verdict) -> msg.Outgoing | None:
        """A structured error reply to an authenticated, allowed sender, if policy allows one.

        It goes to the authenticated From address only, never to a Reply-To, which nothing
        vouches for; the per-conversation cap applies as to any reply.
        """
        conversation = self.journal.conversation_of_ids(
            [message.message_id or "", message.in_reply_to or "", *message.references])
        replies = (self.journal.replies_in_conversation(self.address, conversation)
                   if conversation else 0)
        if not policy.evaluate(message, self.policy, replies_in_conversation=replies).may_reply:
            return None
        reason = verdict.reason or "rejected"
        payload = {"error": reason, "message": ERROR_TEXTS.get(reason, "the message was rejected"),
                   "in_reply_to": message.message_id}
        if "limit" in verdict.details:
            payload["limit"] = verdict.details["limit"]
        try:
            reply = msg.compose_reply(replace(message, reply_to=()), from_addr=self.address,
                                      payload=payload, index=0, salt=ERROR_REPLY_SALT,
                                      limits=self.limits)
            self.check_outgoing([reply])
        except errors.OutgoingRejected as exc:
            log.warning("%s: no error reply to %s: %s", self.address, message.key, exc)
            return None
        return reply

    def check_outgoing(self, outgoing: Sequence[msg.Outgoing]) -> None:
        """Refuse outgoing mail over `max_recipients` or outside `allow_to` (OutgoingRejected)."""
        for o in outgoing:
            count = len(o.to) + len(o.cc)
            if count > self.settings.max_recipients:
                raise errors.OutgoingRejected(
                    f"message {o.message_id} has {count} recipients, more than max_recipients "
                    f"({self.settings.max_recipients}); nothing was sent")
            policy.check_recipients(o, self.policy)

    def reply_blockers(self, conversation: str | None, message: msg.Message,
                       handler_insists: bool) -> list[str]:
        """Why replies to `message` must be dropped (RFC 3834 and the per-conversation cap).

        A handler may insist on answering automatic mail, never on passing the cap or on
        answering a sender who failed authentication (no backscatter).
        """
        replies = self.journal.replies_in_conversation(self.address, conversation) \
            if conversation else 0
        verdict = policy.evaluate(message, self.policy, replies_in_conversation=replies)
        if verdict.may_reply:
            return []
        blockers = list(verdict.details.get("reply_blocked") or [verdict.reason or "policy"])
        if handler_insists:
            blockers = [b for b in blockers if b != "auto_submitted"]
        return blockers
