"""Builders of realistic journal events for tests."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

from agentmail.journal import events as ev

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def fetched(account: str, pid: str, *, message_id: str | None = None, references=(),
            in_reply_to: str | None = None, sender: str = "peer@example.com",
            subject: str = "hello", payload=None) -> ev.Event:
    return ev.Event(ev.FETCHED, account, message_key=ev.message_key(account, pid), data={
        "provider_id": pid, "thread_id": f"t{pid}", "message_id": message_id or f"<{pid}@mail>",
        "in_reply_to": in_reply_to, "references": list(references), "sender": sender,
        "recipients": [account], "subject": subject, "date": T0.isoformat(),
        "payload": payload if payload is not None else {"n": pid},
    })


def claimed(account: str, pid: str, *, run_id: str = "run1", attempt: int = 1) -> ev.Event:
    return ev.Event(ev.CLAIMED, account, message_key=ev.message_key(account, pid), run_id=run_id,
                    attempt=attempt,
                    data={"lease_until": (T0 + timedelta(minutes=5)).isoformat()})


def processed(account: str, pid: str, *, replies: int = 1, run_id: str = "run1") -> ev.Event:
    outgoing = [{
        "outbox_id": f"o{pid}.{i}", "message_id": f"<o{pid}.{i}@agent>", "thread_id": f"t{pid}",
        "recipients": ["peer@example.com"], "subject": "Re: hello",
        "raw": base64.urlsafe_b64encode(b"raw").decode(),
    } for i in range(replies)]
    return ev.Event(ev.PROCESSED, account, message_key=ev.message_key(account, pid),
                    run_id=run_id, data={"result": None, "outgoing": outgoing})


def sent(account: str, pid: str, i: int = 0, *, run_id: str = "run1") -> ev.Event:
    return ev.Event(ev.SENT, account, message_key=ev.message_key(account, pid), run_id=run_id,
                    data={"outbox_id": f"o{pid}.{i}", "provider_id": f"s{pid}.{i}",
                          "thread_id": f"t{pid}", "message_id": f"<o{pid}.{i}@agent>",
                          "in_reply_to": f"<{pid}@mail>", "references": [f"<{pid}@mail>"],
                          "sender": account, "recipients": ["peer@example.com"],
                          "subject": "Re: hello", "recovered": False})


def simple(kind: str, account: str, pid: str, *, run_id: str = "run1", **data) -> ev.Event:
    return ev.Event(kind, account, message_key=ev.message_key(account, pid), run_id=run_id,
                    data=data)
