"""The trust suite: hostile and odd mail put into the emulator as is, then a real run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentmail.config import Settings
from agentmail.emulator import Emulator
from agentmail.journal.store import Journal
from agentmail.services.runner import Run
from tests.agents import Agents, agent_settings


@pytest.fixture(scope="session")
def trust_emulator() -> Iterator[Emulator]:
    """One emulator for the suite; every test uses fresh addresses."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def journal(sqlite_journal: Journal) -> Journal:
    """SQLite only here (tests/integration/test_journal_engines.py runs both engines); it is
    the file `agent_settings` names."""
    return sqlite_journal


@pytest.fixture
def settings(tmp_path: Path, trust_emulator: Emulator) -> Settings:
    return agent_settings(tmp_path, trust_emulator.url)


RunFactory = Callable[..., Run]


@pytest.fixture
def start_run(trust_emulator: Emulator, journal: Journal, settings: Settings
              ) -> Iterator[RunFactory]:
    """`start_run(address, agent=None, **settings)`: a live run of `address`, closed at the end."""
    agents = Agents(trust_emulator.url, journal, settings)
    yield agents.run
    agents.close()
