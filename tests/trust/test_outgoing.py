"""Outgoing mail a handler asks for: header injection, bad addresses and recipient limits are
refused before anything is journaled as processed or sent."""

from __future__ import annotations

import pytest

from agentmail.agent import Agent
from agentmail.journal import events as ev

from . import mail as m


class Asks(Agent):
    """Sends whatever the test put in `spec`: a request or a reply."""

    def __init__(self, email, **spec):
        super().__init__(email)
        self.spec = spec

    def process_message(self, message):
        if "reply_payload" in self.spec:
            self.reply_to_message(message, self.spec["reply_payload"])
        else:
            self.send_message(self.spec["to"], self.spec.get("subject", "next"), {"x": 1})
        return {"status": "done"}


CASES = {
    "crlf_in_subject": ({"to": "peer@corp.example", "subject": "hi\r\nBcc: victim@else.example"},
                        {}, "control character"),
    "lf_in_subject": ({"to": "peer@corp.example", "subject": "hi\nX-Evil: 1"}, {},
                      "control character"),
    "crlf_in_address": ({"to": "peer@corp.example\r\nBcc: victim@else.example"}, {},
                        "control character"),
    "invalid_address": ({"to": "not an address"}, {}, "invalid recipient"),
    "too_many_recipients": ({"to": [f"p{i}@corp.example" for i in range(6)]},
                            {"max_recipients": 5}, "more than max_recipients"),
    "outside_allow_to": ({"to": "peer@elsewhere.example"}, {"allow_to": ("@corp.example",)},
                         "not in the allow_to list"),
    "reply_outside_allow_to": ({"reply_payload": {"ok": 1}}, {"allow_to": ("@nowhere.example",)},
                               "not in the allow_to list"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_unsafe_outgoing_mail_fails_the_handler_and_nothing_is_sent(trust_emulator, journal,
                                                                    start_run, name):
    spec, overrides, error = CASES[name]
    agent = m.address("agent", "agents.example")
    run = start_run(agent, Asks(agent, **spec), **overrides)
    delivered = trust_emulator.deliver(m.mail(m.address(), agent), to=agent)
    run.cycle()
    key = ev.message_key(agent, delivered["id"])
    events = journal.events_of_message(key)
    assert [e.kind for e in events] == ["fetched", "claimed", "failed", "dead_lettered"]
    failed, dead = events[2], events[3]
    assert failed.data["error_class"] == "OutgoingRejected" and error in failed.data["error"]
    assert failed.data["retryable"] is False and dead.data["reason"] == "outgoing_rejected"
    assert run.totals.sent == 0 and journal.outbox_of(key) == []
    assert run.mailbox.list_labelled("SENT", 10) == []


def test_recipients_within_the_limits_are_sent(trust_emulator, journal, start_run):
    agent = m.address("agent", "agents.example")
    run = start_run(agent, Asks(agent, to=["a@corp.example", "b@corp.example"]),
                    max_recipients=2, allow_to=("*.corp.example", "@corp.example"))
    delivered = trust_emulator.deliver(m.mail(m.address(), agent), to=agent)
    run.cycle()
    assert journal.message(ev.message_key(agent, delivered["id"])).state == "acked"
    assert run.totals.sent == 1 and len(run.mailbox.list_labelled("SENT", 10)) == 1
