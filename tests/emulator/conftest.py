"""Fixtures for the emulator's own tests; the reusable ones live in agentmail.emulator.testing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentmail.emulator import Emulator
from agentmail.emulator.client import build_service
from agentmail.emulator.testing import (  # noqa: F401 - fixtures
    Account,
    emulator,
    fresh_address,
    gmail_emulator,
    new_account,
)


@pytest.fixture
def private_emulator() -> Iterator[Callable[..., Emulator]]:
    """Factory for an emulator with its own settings (rate limits, regime, ...)."""
    started: list[Emulator] = []

    def make(**kw: Any) -> Emulator:
        emu = Emulator(**kw).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def account_on() -> Iterator[Callable[..., Account]]:
    """Factory: an Account on a given emulator, its service closed at teardown."""
    services: list[Any] = []

    def make(emu: Emulator, prefix: str = "user", address: str | None = None) -> Account:
        address = address or fresh_address(prefix)
        service = build_service(emu.url, address)
        services.append(service)
        return Account(address, service, emu.url)

    yield make
    for service in services:
        service.close()
