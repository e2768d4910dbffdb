"""Error replies go through the outbox: an outage delays them, a lost answer does not
duplicate them, a refusal gives them up; the rejection stands in every case."""

from __future__ import annotations

from contextlib import closing

import pytest

from agentmail.emulator.client import build_service
from agentmail.journal import events as ev

from . import mail as m

SEND = "gmail.users.messages.send"


@pytest.fixture
def faults(trust_emulator):
    yield trust_emulator.set_faults
    trust_emulator.clear_faults()


def _count_inbox(emulator, address):
    with closing(build_service(emulator.url, address)) as svc:
        return len(svc.users().messages().list(userId="me", q="in:inbox").execute().get(
            "messages", []))


def _start(trust_emulator, start_run):
    agent = m.address("agent", "agents.example")
    run = start_run(agent, error_replies=True)
    sender = m.address("sender")
    delivered = trust_emulator.deliver(m.mail(sender, agent, body=b'{"cut": '), to=agent)
    return run, sender, ev.message_key(agent, delivered["id"])


def test_an_error_reply_held_up_by_an_outage_goes_out_on_a_later_cycle(trust_emulator, journal,
                                                                       start_run, faults):
    run, sender, key = _start(trust_emulator, start_run)
    faults(script=[{"method": SEND, "action": "error", "code": 503, "count": 50}])
    run.cycle()
    assert journal.message(key).state == "rejected" and run.totals.sent == 0
    assert [o.state for o in journal.outbox_of(key)] == ["queued"]
    trust_emulator.clear_faults()
    run.cycle()
    run.cycle()
    assert [o.state for o in journal.outbox_of(key)] == ["sent"]
    assert _count_inbox(trust_emulator, sender) == 1 and journal.message(key).state == "rejected"


def test_a_lost_send_answer_does_not_duplicate_the_error_reply(trust_emulator, journal,
                                                               start_run, faults):
    run, sender, key = _start(trust_emulator, start_run)
    faults(script=[{"method": SEND, "action": "drop_after", "count": 1}])
    run.cycle()
    run.cycle()
    assert _count_inbox(trust_emulator, sender) == 1
    [sent] = [e for e in journal.events_of_message(key) if e.kind == ev.SENT]
    assert sent.data["recovered"] is True


def test_a_refused_error_reply_is_given_up_and_the_rejection_stands(trust_emulator, journal,
                                                                    start_run, faults):
    run, sender, key = _start(trust_emulator, start_run)
    faults(script=[{"method": SEND, "action": "error", "code": 400, "count": 1}])
    run.cycle()
    run.cycle()
    kinds = [e.kind for e in journal.events_of_message(key)]
    assert kinds == ["fetched", "rejected", "failed"]
    row = journal.message(key)
    assert (row.state, row.last_error) == ("rejected", "invalid_json")
    assert [o.state for o in journal.outbox_of(key)] == ["refused"]
    assert _count_inbox(trust_emulator, sender) == 0
    assert journal.rebuild() > 0 and [o.state for o in journal.outbox_of(key)] == ["refused"]
