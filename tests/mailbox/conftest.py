"""Fixtures for the Mailbox tests: an in-process emulator and Gmail adapters pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from agentmail.mailbox import RetryPolicy
from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials


@pytest.fixture
def emulator() -> Iterator[object]:
    """A fresh emulator per test: faults and counters never leak between tests."""
    from agentmail.emulator import Emulator

    with Emulator() as emu:
        yield emu


@pytest.fixture
def sleeps() -> list[float]:
    """Seconds the adapters under test asked to sleep (they never really sleep)."""
    return []


@pytest.fixture
def retry(sleeps: list[float]) -> RetryPolicy:
    # attempts=12: a 30 % fault rate fails 12 times in a row once in ~2 million calls
    return RetryPolicy(attempts=12, sleep=sleeps.append, random=lambda: 0.5)


@pytest.fixture
def make_gmail(emulator, retry: RetryPolicy) -> Iterator[Callable[..., GmailMailbox]]:
    opened: list[GmailMailbox] = []

    def make(address: str, **kwargs: object) -> GmailMailbox:
        kwargs.setdefault("retry", retry)
        box = GmailMailbox(address, emulator_credentials(address), api_endpoint=emulator.url,
                           **kwargs)
        opened.append(box)
        return box

    yield make
    for box in opened:
        box.close()
