"""The MCP server against the emulator and a real journal, through the SDK's clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP tests need the mcp extra: pip install -e '.[mcp]'")

from agentmail.config import Settings
from agentmail.journal.store import Journal
from agentmail.services.inbox import Inbox
from tests.agents import Agents
from tests.integration import conftest as integration

ALICE = "alice@example.com"
BOB = "bob@example.com"
POLL_SECONDS = 0.05  # wait_for_reply's polling in tests


# The emulator, journal, settings and agents fixtures are the integration tests' own.
emulator = integration.emulator
journal = integration.journal
settings = integration.settings
agents = integration.agents

InboxFactory = Callable[..., Inbox]


@pytest.fixture
def make_inbox(agents: Agents, journal: Journal, settings: Settings) -> Iterator[InboxFactory]:
    """`make_inbox(*addresses, **settings)`: an Inbox on the test journal, closed at the end."""
    stack = ExitStack()

    def make(*addresses: str, **overrides: Any) -> Inbox:
        inbox = Inbox(journal, replace(settings, **overrides),
                      [agents.mailbox(a) for a in addresses])
        stack.callback(inbox.close)
        return inbox

    yield make
    stack.close()


def server(inbox: Inbox, **kw: Any):
    from agentmail.mcp.server import build_server

    return build_server(inbox, inbox.settings, poll_seconds=POLL_SECONDS, **kw)


async def call(client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool; its structured result, or AssertionError with the tool's error text."""
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise AssertionError(f"{tool} failed: {result.content[0].text}")
    return result.structured_content


async def call_error(client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; the error text the model reads."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} was expected to fail: {result.structured_content}"
    return result.content[0].text


def drive(app, scenario):
    """Run `scenario(client)` against `app` through the SDK's in-memory client."""
    import anyio
    from mcp import Client

    async def main():
        async with Client(app) as client:
            return await scenario(client)

    return anyio.run(main)
