"""Agents on the emulator for tests: real googleapiclient, real journal, fast retries."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from agentmail.agent import Agent
from agentmail.config import Settings
from agentmail.journal.store import Journal
from agentmail.mailbox.base import RetryPolicy
from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials
from agentmail.services.runner import Run

# Fault storms are retried for real, just without the waiting.
FAST_RETRY = RetryPolicy(attempts=10, base=0.001, cap=0.005)


def agent_settings(tmp_path: Path, emulator_url: str) -> Settings:
    """Defaults, but for the emulator and with fast backoff so retry tests do not wait."""
    return Settings(config_path=tmp_path / "agent_config.json", emulator=emulator_url,
                    db=str(tmp_path / "journal.db"), check_interval=0, backoff_base=0.01,
                    backoff_max=0.05)


class Agents:
    """Opens mailboxes and live runs on one journal; `close()` stops and closes them all."""

    def __init__(self, emulator_url: str, journal: Journal, settings: Settings) -> None:
        self.emulator_url = emulator_url
        self.journal = journal
        self.settings = settings
        self._stack = ExitStack()

    def mailbox(self, address: str) -> GmailMailbox:
        mailbox = GmailMailbox(address, emulator_credentials(address),
                               api_endpoint=self.emulator_url, retry=FAST_RETRY)
        self._stack.callback(mailbox.close)
        return mailbox

    def run(self, address: str, agent: Agent | None = None, **overrides) -> Run:
        """A live run of `address` (the default agent unless given), settings overridden."""
        run = Run(journal=self.journal, mailbox=self.mailbox(address),
                  agent=agent or Agent(address), settings=replace(self.settings, **overrides),
                  sleep=lambda s: None)
        self._stack.enter_context(run)
        return run

    def close(self) -> None:
        self._stack.close()
