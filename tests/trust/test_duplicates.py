"""Several copies of one Message-ID in one mailbox: handled on purpose, by the rule.

The rule: a copy with the same Message-ID, the same sender and the same body as the first
copy is a duplicate (journaled `duplicate`, acked, never handed to the handler); a copy
that differs in sender or body is processed, and its replies get Message-IDs of their own.
Nothing about it can crash the run (a shared reply Message-ID once did, for every run).
"""

from __future__ import annotations

from collections import Counter

import pytest

from agentmail.journal import events as ev
from agentmail.journal.verify import verify
from tests.recovery.conftest import AGENT, REQUESTER, Lab, journal_messages

from . import mail as m


def _replies(journal, agent: str, message_id: str) -> list[str]:
    """Message-IDs of the replies `agent` sent to `message_id`."""
    return [e.data["message_id"] for e in journal.events_since(0)
            if e.kind == ev.SENT and e.account == agent and e.data.get("in_reply_to") == message_id]


def _copies(journal, agent: str, message_id: str):
    return [r for r in journal.received_matching(message_id, account=agent)]


@pytest.mark.parametrize("copies", [2, 3, 10])
@pytest.mark.parametrize("arrival", ["one-batch", "separate-cycles"])
def test_identical_copies_are_handled_once(trust_emulator, journal, start_run, copies, arrival):
    agent, sender = m.address("agent", "agents.example"), m.address()
    run = start_run(agent)
    mid = m.message_id()
    raw = m.mail(sender, agent, msg_id=mid, body=b'{"task": "once"}\r\n')
    for n in range(copies):
        # A list server's copy may differ in its line endings only: still the same body.
        trust_emulator.deliver(raw if n % 2 == 0 else raw.replace(b"\r\n", b"\n"), to=agent)
        if arrival == "separate-cycles":
            run.cycle()
    run.cycle()
    rows = _copies(journal, agent, mid)
    assert Counter(r.state for r in rows) == {"acked": 1, "duplicate": copies - 1}
    first = min(rows, key=lambda r: r.first_seq)
    assert first.state == "acked"
    assert {r.duplicate_of for r in rows if r.state == "duplicate"} == {first.key}
    assert len(_replies(journal, agent, mid)) == 1
    assert run.totals.duplicates == copies - 1
    assert verify(journal).ok


@pytest.mark.parametrize("differs", ["body", "sender"])
def test_copies_that_differ_are_each_processed_with_replies_of_their_own(
        trust_emulator, journal, start_run, differs):
    agent = m.address("agent", "agents.example")
    run = start_run(agent)
    mid = m.message_id()
    senders = [m.address() for _ in range(3)] if differs == "sender" else [m.address()] * 3
    for n, sender in enumerate(senders):
        body = f'{{"task": {n if differs == "body" else 0}}}\r\n'.encode()
        trust_emulator.deliver(m.mail(sender, agent, msg_id=mid, body=body), to=agent)
    report = run.cycle()
    assert not report.errors, report.errors
    rows = _copies(journal, agent, mid)
    assert [r.state for r in rows] == ["acked"] * 3
    replies = _replies(journal, agent, mid)
    assert len(replies) == 3 and len(set(replies)) == 3  # distinct Message-IDs
    assert verify(journal).ok


@pytest.mark.slow
def test_copies_with_a_crash_between_them_are_still_answered_once(tmp_path):
    from agentmail.emulator import Emulator

    with Emulator() as emu:
        lab = Lab(emu, tmp_path)
        mid = m.message_id()
        raw = m.mail(REQUESTER, AGENT, msg_id=mid, body=b'{"job": "copy"}\r\n')
        emu.deliver(raw, to=AGENT)
        crashed = lab.run("-n", "2", AGENTMAIL_CRASH_AT="after_processed:1")
        assert crashed.returncode == -9, crashed.stdout + crashed.stderr
        emu.deliver(raw, to=AGENT)
        emu.deliver(raw, to=AGENT)
        done = lab.run("-n", "3")
        assert done.returncode == 0, done.stdout + done.stderr
        lab.requests.append(mid)
        with lab.journal() as journal:
            states = Counter(r.state for r in journal_messages(journal) if r.direction == "in")
            assert states == {"acked": 1, "duplicate": 2}
            assert verify(journal).ok
        assert sum(lab.replies().values()) == 1
