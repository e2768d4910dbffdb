"""The trust suite: hostile and odd mail put into the emulator as is, then a real run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
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

FAST_RETRY = RetryPolicy(attempts=5, base=0.001, cap=0.005)


@pytest.fixture(scope="session")
def trust_emulator() -> Iterator[Emulator]:
    """One emulator for the suite; every test uses fresh addresses."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(str(tmp_path / "journal.db")) as j:
        yield j


@pytest.fixture
def settings(tmp_path: Path, trust_emulator: Emulator) -> Settings:
    return Settings(config_path=tmp_path / "agent_config.json", emulator=trust_emulator.url,
                    db=str(tmp_path / "journal.db"), check_interval=0, backoff_base=0.01,
                    backoff_max=0.05)


RunFactory = Callable[..., Run]


@pytest.fixture
def start_run(trust_emulator: Emulator, journal: Journal, settings: Settings
              ) -> Iterator[RunFactory]:
    """`start_run(address, agent=None, **settings)`: a live run of `address`, closed at the end."""
    with ExitStack() as stack:
        def start(address: str, agent: Agent | None = None, **overrides) -> Run:
            mailbox = GmailMailbox(address, emulator_credentials(address),
                                   api_endpoint=trust_emulator.url, retry=FAST_RETRY)
            stack.callback(mailbox.close)
            run = Run(journal=journal, mailbox=mailbox, agent=agent or Agent(address),
                      settings=replace(settings, **overrides), sleep=lambda s: None)
            stack.enter_context(run)
            return run

        yield start
