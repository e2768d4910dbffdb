"""agentmail: agents that talk to each other over email.

Subclass `Agent`, override `process_message(message)`, and call
`reply_to_message` / `send_message`; `agentmail run` does the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentmail import errors

if TYPE_CHECKING:
    from agentmail.agent import Agent
    from agentmail.message import Message

__all__ = ["Agent", "Message", "errors"]


def __getattr__(name: str) -> Any:
    # Imported on first use: every `agentmail` command imports this package first, and
    # most of them never touch the handler API.
    if name == "Agent":
        from agentmail.agent import Agent

        return Agent
    if name == "Message":
        from agentmail.message import Message

        return Message
    raise AttributeError(f"module 'agentmail' has no attribute {name!r}")
