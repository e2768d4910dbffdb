"""agentmail: agents that talk to each other over email.

Subclass `Agent`, override `process_message(message)`, and call
`reply_to_message` / `send_message`; `agentmail run` does the rest.
"""

from agentmail import errors
from agentmail.agent import Agent
from agentmail.message import Message

__all__ = ["Agent", "Message", "errors"]
