"""Leases: a live run keeps extending them while a slow handler runs; a dead run's lapse."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

from agentmail.agent import Agent
from agentmail.config import load_settings
from agentmail.journal import events as ev
from agentmail.journal.store import as_utc
from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials
from agentmail.services.runner import Run

from .conftest import AGENT, journal_messages

LEASE = 0.6  # seconds; the heartbeat thread beats every LEASE / 3


class Slow(Agent):
    """Outlives its lease twice over, and looks at its own lease while it runs."""

    def __init__(self, journal):
        super().__init__(AGENT)
        self.journal = journal
        self.seen: list[bool] = []

    def process_message(self, message):
        for _ in range(4):
            time.sleep(LEASE / 2)
            row = self.journal.message(message.key)
            self.seen.append(as_utc(row.lease_expires_at) > self.journal.clock())
        self.reply_to_message(message, {"slow": True})


def test_a_slow_handler_keeps_its_lease_while_the_run_lives(lab):
    lab.send_requests(1)
    settings = replace(load_settings(lab.config, overrides={"db": str(lab.db)}),
                       lease_seconds=LEASE)
    with lab.journal() as journal, GmailMailbox(AGENT, emulator_credentials(AGENT),
                                                api_endpoint=lab.emulator.url) as mailbox:
        agent = Slow(journal)
        with Run(journal=journal, mailbox=mailbox, agent=agent, settings=settings) as run:
            run.cycle()
            row = journal.run(run.run_id)
        assert agent.seen == [True] * 4  # never lapsed, though the handler took 2 leases
        # Beats moved the run's own row (not the event log): its lease outlived two periods.
        assert row.heartbeat_at > row.started_at
        assert row.expires_at > row.started_at + timedelta(seconds=2 * LEASE)
        assert [e for e in journal.events_since(0) if e.kind == ev.RUN_HEARTBEAT] == []
        assert {m.state for m in [journal.message(k) for k in _keys(journal)]} == {"acked"}
        assert [e for e in journal.events_since(0) if e.kind == ev.RECONCILED] == []


def _keys(journal):
    return [m.key for m in journal_messages(journal) if m.direction == "in"]
