"""Agents exchanging mail, journaled as the pipeline journals it.

`Mail` appends the events of each step through `Journal.append`: a request sent
with `agentmail send` (a `sent` event filed under its own key), a delivery
(`fetched` in the recipient's mailbox, with the Message-ID / In-Reply-To /
References real mail carries and the recipient's own Gmail thread id), and the
handling of a message (`claimed`, `processed` with its outgoing messages,
`sent` filed under the handled message, `acked`).
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from agentmail.journal import events as ev
from agentmail.journal.store import Journal
from tests.journal.history import T0

A, B, C = "a@agents.test", "b@agents.test", "c@agents.test"


@dataclass(frozen=True)
class Sent:
    """A message as it left its sender: what the recipient's copy will carry."""

    account: str
    provider_id: str
    thread_id: str
    message_id: str
    recipients: tuple[str, ...]
    subject: str
    payload: Any
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    date: datetime = T0


@dataclass
class Mail:
    journal: Journal
    now: datetime = T0
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    threads: dict[tuple[str, str], str] = field(default_factory=dict)  # (account, root) -> thread

    def _tick(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now

    def _pid(self, account: str) -> str:
        return f"{account[0]}{next(self._ids):04x}"

    def _thread(self, account: str, references: tuple[str, ...], message_id: str) -> str:
        # Gmail files a message in the thread of its root reference, per mailbox.
        root = references[0] if references else message_id
        return self.threads.setdefault((account, root), f"T{account[0]}{len(self.threads) + 1}")

    def request(self, sender: str, to: list[str], *, subject: str = "question",
                payload: Any = None, message_id: str | None = None) -> Sent:
        """`agentmail send`: a new conversation; the `sent` event is filed under its own key."""
        pid = self._pid(sender)
        message_id = message_id or f"<req.{pid}@{sender.split('@')[1]}>"
        out = Sent(sender, pid, self._thread(sender, (), message_id), message_id, tuple(to),
                   subject, payload if payload is not None else {"ask": subject}, date=self._tick())
        self.journal.append(ev.Event(ev.SENT, sender, message_key=ev.message_key(sender, pid),
                                     at=out.date, data=self._sent_data(out, None)))
        return out

    @staticmethod
    def _sent_data(out: Sent, outbox_id: str | None) -> dict[str, Any]:
        return {"outbox_id": outbox_id, "provider_id": out.provider_id,
                "thread_id": out.thread_id, "message_id": out.message_id,
                "in_reply_to": out.in_reply_to, "references": list(out.references),
                "sender": out.account, "recipients": list(out.recipients),
                "subject": out.subject, "payload": out.payload, "recovered": False}

    def deliver(self, sent: Sent, to: str, *, late: bool = False) -> str:
        """The recipient's mailbox fetches its copy; returns the message key."""
        pid = self._pid(to)
        key = ev.message_key(to, pid)
        raw = base64.urlsafe_b64encode(b"From: x\r\n\r\n" + b"x" * 300).decode()
        self.journal.append(ev.Event(ev.FETCHED, to, message_key=key, run_id=f"run-{to}",
                                     at=self._tick(), data={
            "provider_id": pid, "thread_id": self._thread(to, sent.references, sent.message_id),
            "labels": ["INBOX", "UNREAD"], "message_id": sent.message_id,
            "in_reply_to": sent.in_reply_to, "references": list(sent.references),
            "sender": sent.account, "recipients": list(sent.recipients),
            "subject": sent.subject, "date": sent.date.isoformat(), "payload": sent.payload,
            "auto_submitted": "auto-replied" if sent.in_reply_to else "auto-generated",
            "size": 300, "raw": raw}))
        return key

    def handle(self, key: str, *, replies: list[dict[str, Any]] = (), ack: bool = True,
               attempt: int = 1) -> list[Sent]:
        """Claim, process (queueing `replies`), send each, ack. Each reply dict: to, payload,
        and optionally subject; it answers the handled message."""
        account = key.split(":")[0]
        run = f"run-{account}"
        fetched = next(e for e in self.journal.events_of_message(key) if e.kind == ev.FETCHED).data
        self.journal.append(ev.Event(ev.CLAIMED, account, message_key=key, run_id=run,
                                     attempt=attempt, at=self._tick(), data={
                                         "lease_until": (self.now + timedelta(minutes=5)).isoformat()}))
        outs = []
        for i, reply in enumerate(replies):
            out_pid = self._pid(account)
            refs = (*fetched["references"], fetched["message_id"])
            outs.append((f"{key}#{i}", Sent(
                account, out_pid, self._thread(account, refs, ""),
                f"<rep.{out_pid}@{account.split('@')[1]}>", tuple(reply["to"]),
                reply.get("subject", f"Re: {fetched['subject']}"), reply["payload"],
                in_reply_to=fetched["message_id"], references=refs)))
        self.journal.append(ev.Event(ev.PROCESSED, account, message_key=key, run_id=run,
                                     attempt=attempt, at=self._tick(), data={
            "result": {"ok": True}, "history_point": None, "outgoing": [{
                "outbox_id": oid, "message_id": o.message_id, "thread_id": o.thread_id,
                "recipients": list(o.recipients), "subject": o.subject,
                "in_reply_to": o.in_reply_to, "references": list(o.references),
                "auto_submitted": "auto-replied", "payload": o.payload,
                "raw": base64.urlsafe_b64encode(b"raw reply bytes").decode()}
                for oid, o in outs]}))
        sent = []
        for oid, o in outs:
            o = replace(o, date=self._tick())
            self.journal.append(ev.Event(ev.SENT, account, message_key=key, run_id=run, at=o.date,
                                         data=self._sent_data(o, oid)))
            sent.append(o)
        if ack:
            self.journal.append(ev.Event(ev.ACKED, account, message_key=key, run_id=run,
                                         at=self._tick()))
        return sent

    def step(self, kind: str, key: str, *, attempt: int | None = None, **data: Any) -> None:
        account = key.split(":")[0]
        self.journal.append(ev.Event(kind, account, message_key=key, run_id=f"run-{account}",
                                     attempt=attempt, at=self._tick(), data=data))
