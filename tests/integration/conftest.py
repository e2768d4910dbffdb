"""The agent against the Gmail emulator through the real googleapiclient, on a real journal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmail.config import Settings
from agentmail.emulator import Emulator
from agentmail.journal.store import Journal
from tests.agents import Agents, agent_settings

ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def journal(sqlite_journal: Journal) -> Journal:
    """SQLite only here (tests/integration/test_journal_engines.py runs both engines); it is
    the file `agent_settings` names."""
    return sqlite_journal


@pytest.fixture
def settings(tmp_path: Path, emulator: Emulator) -> Settings:
    return agent_settings(tmp_path, emulator.url)


@pytest.fixture
def agents(emulator, journal, settings) -> Iterator[Agents]:
    a = Agents(emulator.url, journal, settings)
    yield a
    a.close()
