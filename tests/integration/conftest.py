"""The agent against the Gmail emulator through the real googleapiclient, on a real journal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agentmail.agent import Agent
from agentmail.config import Settings
from agentmail.emulator import Emulator
from agentmail.journal.store import Journal
from agentmail.mailbox.base import RetryPolicy
from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials
from agentmail.services.runner import Run

# Fault storms are retried for real, just without the waiting.
FAST_RETRY = RetryPolicy(attempts=10, base=0.001, cap=0.005)

ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(str(tmp_path / "journal.db")) as j:
        yield j


@pytest.fixture
def settings(tmp_path: Path, emulator: Emulator) -> Settings:
    # Fast retries so tests of backoff do not wait; everything else at its default.
    return Settings(config_path=tmp_path / "agent_config.json", emulator=emulator.url,
                    db=str(tmp_path / "journal.db"), check_interval=0, backoff_base=0.01,
                    backoff_max=0.05)


class Agents:
    """Opens mailboxes and runs for tests; closes them all at the end."""

    def __init__(self, emulator: Emulator, journal: Journal, settings: Settings) -> None:
        self.emulator = emulator
        self.journal = journal
        self.settings = settings
        self._open: list = []

    def mailbox(self, address: str) -> GmailMailbox:
        mb = GmailMailbox(address, emulator_credentials(address), api_endpoint=self.emulator.url,
                          retry=FAST_RETRY)
        self._open.append(mb)
        return mb

    def run(self, address: str, agent: Agent | None = None, **overrides) -> Run:
        settings = replace(self.settings, **overrides) if overrides else self.settings
        run = Run(journal=self.journal, mailbox=self.mailbox(address),
                  agent=agent or Agent(address), settings=settings, sleep=lambda s: None)
        run.__enter__()
        self._open.append(run)
        return run

    def close(self) -> None:
        for thing in reversed(self._open):
            if isinstance(thing, Run):
                thing.__exit__(None, None, None)
            else:
                thing.close()


@pytest.fixture
def agents(emulator, journal, settings) -> Iterator[Agents]:
    a = Agents(emulator, journal, settings)
    yield a
    a.close()
