"""One message whose journaling fails (a fault injected inside the append) is quarantined:
its attempt fails and is retried, the rest of its batch goes through, the run goes on."""

from __future__ import annotations

from collections import Counter

from agentmail.journal import events as ev
from agentmail.journal.verify import verify

from . import mail as m


def _deliver(emulator, agent: str, count: int) -> list[str]:
    sender = m.address()
    ids = [m.message_id() for _ in range(count)]
    for mid in ids:
        emulator.deliver(m.mail(sender, agent, msg_id=mid), to=agent)
    return ids


def test_a_fault_inside_one_messages_append_quarantines_only_that_message(
        trust_emulator, journal, start_run):
    agent = m.address("agent", "agents.example")
    ids = _deliver(trust_emulator, agent, 6)
    poisoned = ids[2]
    run = start_run(agent, max_attempts=2, backoff_base=0, backoff_max=0)

    def hook(event: ev.Event) -> None:
        if event.kind == ev.PROCESSED and event.message_key and \
                journal.message(event.message_key).rfc_message_id == poisoned:
            raise RuntimeError("injected: the journal refused this message")

    journal.append_hook = hook
    try:
        report = run.cycle()  # no backoff: the second attempt comes in the same cycle
    finally:
        journal.append_hook = None
    states = {i: journal.received_matching(i, account=agent)[0] for i in ids}
    assert Counter(r.state for mid, r in states.items() if mid != poisoned) == {"acked": 5}
    row = states[poisoned]
    assert row.state == "dead_lettered" and row.attempts == 2
    failures = [e for e in journal.events_of_message(row.key) if e.kind == ev.FAILED]
    assert [f.data["stage"] for f in failures] == ["pipeline", "pipeline"]
    assert "injected" in failures[0].data["error"]
    assert report.acked == 5 and report.failed == 2 and report.dead_lettered == 1
    assert verify(journal).ok


def test_a_message_the_journal_refuses_at_fetch_is_fetched_again_next_cycle(
        trust_emulator, journal, start_run):
    agent = m.address("agent", "agents.example")
    run = start_run(agent)
    run.cycle()  # the first full sync: later mail arrives through history
    ids = _deliver(trust_emulator, agent, 4)
    refused = ids[1]

    def hook(event: ev.Event) -> None:
        if event.kind == ev.FETCHED and event.data.get("message_id") == refused:
            raise RuntimeError("injected: cannot journal this one now")

    journal.append_hook = hook
    try:
        report = run.cycle()
    finally:
        journal.append_hook = None
    assert report.acked == 3 and any("injected" in e for e in report.errors)
    assert journal.received_matching(refused, account=agent) == []
    run.cycle()  # the cursor was held: listed and fetched again
    [row] = journal.received_matching(refused, account=agent)
    assert row.state == "acked"
    assert verify(journal).ok
