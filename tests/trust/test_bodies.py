"""Bodies: sizes are checked before download, bodies live beside the events, compact drops them.

An oversized message is rejected from its size alone (nothing of it is downloaded or kept);
an accepted message's bytes are stored once, outside the event log, until compacted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

from agentmail.agent import Agent
from agentmail.journal import events as ev
from agentmail.journal.verify import verify

from . import mail as m


class Recorder(Agent):
    def __init__(self, email: str) -> None:
        super().__init__(email)
        self.payloads: list = []

    def process_message(self, message):
        self.payloads.append(message.payload)


class AlwaysFails(Agent):
    def process_message(self, message):
        raise RuntimeError("handler bug")


def _served(emulator, address):
    return emulator.stats()["accounts"].get(address, {}).get("body_bytes_served", 0)


def _fetched(journal, key):
    return next(e for e in journal.events_of_message(key) if e.kind == ev.FETCHED)


def test_an_accepted_body_is_stored_once_beside_the_events(trust_emulator, journal, start_run):
    agent = m.address("agent", "agents.example")
    recorder = Recorder(agent)
    run = start_run(agent, recorder)
    mid = m.message_id()
    raw = m.mail(m.address(), agent, msg_id=mid, body=b'{"task": "keep", "pad": "' +
                 b"x" * 50_000 + b'"}\r\n')
    trust_emulator.deliver(raw, to=agent)
    run.cycle()
    [row] = journal.received_matching(mid, account=agent)
    assert row.state == "acked" and recorder.payloads[0]["task"] == "keep"
    body = journal.body(row.key)
    assert body is not None and body.endswith(raw.split(b"\r\n\r\n", 1)[1])
    # The event log holds the parsed fields only, not the 50 KB of bytes a second time.
    assert "raw" not in _fetched(journal, row.key).data
    assert len(_fetched(journal, row.key).encoded_data()) < 60_000  # the payload itself, once


def test_an_oversized_message_is_rejected_without_downloading_it(trust_emulator, journal,
                                                                 start_run):
    agent = m.address("agent", "agents.example")
    recorder = Recorder(agent)
    run = start_run(agent, recorder, max_message_bytes=100_000)
    big, small = m.message_id(), m.message_id()
    trust_emulator.deliver(m.mail(m.address(), agent, msg_id=big,
                                  body=b'{"a": "' + b"x" * 400_000 + b'"}\r\n'), to=agent)
    trust_emulator.deliver(m.mail(m.address(), agent, msg_id=small), to=agent)
    before = _served(trust_emulator, agent)
    report = run.cycle()
    served = _served(trust_emulator, agent) - before
    assert served < 10_000  # the small message only, never the 400 KB one
    assert report.rejected == 1 and report.acked == 1 and len(recorder.payloads) == 1
    assert journal.in_flight(agent) == []  # nothing left claimed
    rejected = [e for e in journal.events_since(0)
                if e.kind == ev.REJECTED and e.account == agent]
    assert len(rejected) == 1
    assert rejected[0].data["reason"] == "too_large"
    assert rejected[0].data["details"] == {"size": rejected[0].data["details"]["size"],
                                           "limit": 100_000, "limit_name": "max_message_bytes",
                                           "downloaded": False}
    assert rejected[0].data["details"]["size"] > 400_000
    assert journal.body(rejected[0].message_key) is None  # no body of rejected mail is kept
    assert journal.message(rejected[0].message_key).state == "rejected"
    assert verify(journal).ok


def test_compact_drops_finished_bodies_and_keeps_dead_letters_for_replay(
        trust_emulator, journal, start_run):
    agent, failing = m.address("agent", "agents.example"), m.address("agent", "agents.example")
    ok_run = start_run(agent)
    bad_run = start_run(failing, AlwaysFails(failing), max_attempts=1)
    done, dead = m.message_id(), m.message_id()
    trust_emulator.deliver(m.mail(m.address(), agent, msg_id=done), to=agent)
    trust_emulator.deliver(m.mail(m.address(), failing, msg_id=dead), to=failing)
    ok_run.cycle()
    bad_run.cycle()
    [done_row] = journal.received_matching(done, account=agent)
    [dead_row] = journal.received_matching(dead, account=failing)
    assert (done_row.state, dead_row.state) == ("acked", "dead_lettered")

    kept = journal.compact(retention=timedelta(days=7))
    assert kept.bodies_deleted == 0  # finished just now: within the retention
    report = journal.compact(retention=timedelta(0))
    assert report.bodies_deleted >= 1 and report.bytes_freed > 0
    assert journal.body(done_row.key) is None
    assert journal.body(dead_row.key) is not None and report.kept_dead_lettered >= 1
    assert verify(journal).ok  # projections need no bodies
    assert journal.rebuild() > 0 and journal.message(done_row.key).state == "acked"

    journal.compact(retention=timedelta(0), include_dead_lettered=True)
    assert journal.body(dead_row.key) is None


def test_bodies_kept_inline_by_older_journals_are_read_and_compacted(journal):
    """A journal written before the body table keeps `fetched` data "raw" (base64url)."""
    import base64

    account, key = "old@agents.example", "old@agents.example:legacy1"
    raw = m.mail("someone@corp.example", account)
    journal.append(ev.Event(ev.FETCHED, account, message_key=key, data={
        "provider_id": "legacy1", "sender": "someone@corp.example", "recipients": [account],
        "raw": base64.urlsafe_b64encode(raw).decode("ascii")}))
    assert journal.body(key) == raw
    journal.append(ev.Event(ev.REJECTED, account, message_key=key, data={"reason": "test"}))
    report = journal.compact(retention=timedelta(0))
    assert report.events_stripped == 1 and journal.body(key) is None
    assert "raw" not in _fetched(journal, key).data
    assert verify(journal).ok


def test_journal_compact_command_reports_what_it_deleted(tmp_path, trust_emulator, journal,
                                                         start_run, settings):
    agent = m.address("agent", "agents.example")
    run = start_run(agent)
    mid = m.message_id()
    trust_emulator.deliver(m.mail(m.address(), agent, msg_id=mid), to=agent)
    run.cycle()
    [row] = journal.received_matching(mid, account=agent)
    size = len(journal.body(row.key) or b"")
    config = tmp_path / "agent_config.json"
    config.write_text(json.dumps({"db": settings.db, "body_retention_days": 0}))
    out = subprocess.run([sys.executable, "-m", "agentmail", "--config", str(config), "journal",
                          "compact", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"older_than_days": 0, "bodies_deleted": 1,
                                      "bytes_freed": size, "events_stripped": 0,
                                      "kept_dead_lettered": 0}
    assert size > 0 and journal.body(row.key) is None
