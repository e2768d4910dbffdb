"""The same pipeline on every journal engine (SQLite always; PostgreSQL when configured)."""

from __future__ import annotations

import pytest

from agentmail.journal.store import Journal
from agentmail.journal.verify import verify
from agentmail.services.sending import send_request
from tests.agents import Agents

from .conftest import ALICE, BOB


@pytest.fixture
def engine_journal(journal_url):
    with Journal.open(journal_url) as j:
        yield j


def test_an_exchange_with_retries_and_recovery_on_each_engine(engine_journal, emulator,
                                                              settings):
    agents = Agents(emulator.url, engine_journal, settings)
    try:
        bob, alice = agents.run(BOB), agents.run(ALICE)
        for i in range(5):
            send_request(engine_journal, agents.mailbox(ALICE), to=[BOB], subject=f"job {i}",
                         payload={"i": i})
        emulator.set_faults(error_rate=0.2, error_codes=[503, 429], seed=3)
        for _ in range(10):
            bob.cycle()
            alice.cycle()
        emulator.set_faults(error_rate=0.0)
        bob.cycle()
        alice.cycle()
        assert engine_journal.state_counts(BOB) == {"acked": 5}
        assert engine_journal.state_counts(ALICE) == {"acked": 5}
        assert verify(engine_journal).ok
    finally:
        agents.close()
