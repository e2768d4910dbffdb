"""The handler API: subclass `Agent`, override `process_message`, reply or send.

Inside `process_message`, `reply_to_message` and `send_message` touch no network:
they queue into an outbox. When the handler returns, the pipeline journals the
result and every queued message (with its final Message-ID) before sending any
of them, which is what lets a crashed run finish the job without sending twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from agentmail import errors
from agentmail import message as msg


@dataclass
class Outbox:
    """The messages one handler call queued, in order."""

    source: msg.Message
    agent_address: str
    items: list[msg.Outgoing] = field(default_factory=list)
    allow_auto_reply: bool = False  # the handler may answer an auto-submitted message
    # Distinguishes the Message-IDs of a second handling of the same message (a replay)
    # from those of the first, which are journaled and may have been sent.
    salt: str = ""

    def next_index(self) -> int:
        return len(self.items)


class Agent:
    """Base class of every agent. The default answers each request once with an acknowledgement.

    `Agent(email)` also works on its own, as in the seed project: `agent.run()` processes the
    mailbox with the settings of `agent_config.json`, like `agentmail run --email EMAIL`.
    """

    def __init__(self, email: str | None = None, config_path: str | None = None) -> None:
        self.email = email
        self.config_path = config_path
        self._local = threading.local()

    # --- what subclasses override ----------------------------------------------------------

    def process_message(self, message: msg.Message) -> Any:
        """Handle one message. Raise to fail it (it is retried with backoff, then dead-lettered).

        The default acknowledges a request by replying with its payload plus one more entry in
        `exchanges`, and never answers an automatic reply, so two default agents exchange one
        request and one reply and then stay quiet.
        """
        if message.auto_submitted == "auto-replied":
            return {"status": "ignored", "reason": "auto-replied"}
        incoming = message.payload if isinstance(message.payload, dict) else {}
        exchanges = list(incoming.get("exchanges", [])) if isinstance(
            incoming.get("exchanges"), list) else []
        exchanges.append({
            "from": message.sender, "to": self.address,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        self.reply_to_message(message, {**incoming, "status": "acknowledged",
                                        "exchanges": exchanges})
        return {"status": "acknowledged"}

    # --- what handlers call ----------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address of the mailbox this agent serves."""
        outbox = getattr(self._local, "outbox", None)
        return outbox.agent_address if outbox else (self.email or "")

    def reply_to_message(self, message: msg.Message, payload: Any, *,
                         allow_auto_reply: bool = False) -> str:
        """Queue a reply to `message` carrying `payload` (JSON); returns its Message-ID.

        Replies to automatic mail (Auto-Submitted other than "no") are suppressed unless
        `allow_auto_reply=True`, which is how a handler explicitly asks to answer one.
        """
        outbox = self._outbox()
        outbox.allow_auto_reply = outbox.allow_auto_reply or allow_auto_reply
        salt = outbox.salt
        if message.key != outbox.source.key:
            # Answering an earlier message while handling another one: the Message-ID must
            # differ from what handling that earlier message itself produced.
            salt += f"|while:{outbox.source.message_id or outbox.source.key}"
        out = msg.compose_reply(message, from_addr=outbox.agent_address, payload=payload,
                                index=outbox.next_index(), salt=salt)
        outbox.items.append(out)
        return out.message_id

    def send_message(self, to: str | list[str], subject: str, payload: Any) -> str:
        """Queue a new request to `to`; returns its Message-ID. Sent after the handler returns.

        The request belongs to the conversation of the message being handled: its References
        name that conversation, so the answer threads back to it in every journal.
        """
        outbox = self._outbox()
        source = outbox.source
        out = msg.compose_request(
            from_addr=outbox.agent_address, to=to, subject=subject, payload=payload,
            message_id=msg.make_message_id(source.message_id or source.key,
                                           outbox.agent_address, outbox.next_index(),
                                           salt=outbox.salt),
            index=outbox.next_index(),
            references=[*source.references, *([source.message_id] if source.message_id else [])])
        outbox.items.append(out)
        return out.message_id

    # --- used by the pipeline --------------------------------------------------------------

    def _outbox(self) -> Outbox:
        outbox = getattr(self._local, "outbox", None)
        if outbox is None:
            raise errors.UsageError("reply_to_message and send_message can only be called while "
                                    "process_message is handling a message; use `agentmail send` "
                                    "to start a conversation")
        return outbox

    def handle(self, message: msg.Message, agent_address: str, *,
               salt: str = "") -> tuple[Any, Outbox]:
        """Run `process_message` with a fresh outbox; exceptions propagate to the pipeline.

        `salt` is empty the first time a message is handled to a result, and differs for
        every later time (replays), so each handling's messages have Message-IDs of their own.
        """
        outbox = Outbox(source=message, agent_address=agent_address, salt=salt)
        self._local.outbox = outbox
        try:
            result = self.process_message(message)
        finally:
            self._local.outbox = None
        return result, outbox

    def run(self, *, iterations: int | None = None, interval: float | None = None,
            emulator: str | None = None) -> None:
        """Process this agent's mailbox, as `agentmail run --email EMAIL` does."""
        from agentmail.services import runner

        if not self.email:
            raise errors.UsageError("Agent(email=…) is needed to run an agent on its own")
        try:
            runner.run_agent_blocking(self, email=self.email, config_path=self.config_path,
                                      iterations=iterations, interval=interval,
                                      emulator=emulator)
        except KeyboardInterrupt:  # Ctrl-C is how a script's agent is stopped: no traceback
            logging.getLogger(__name__).warning(
                "%s: interrupted; the next run recovers the message that was under way",
                self.email)
