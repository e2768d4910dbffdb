"""Handlers the agent benchmark runs (`--handler benchmarks.handlers:Class`)."""

from __future__ import annotations

import time
from typing import Any

from agentmail.agent import Agent
from agentmail.message import Message

SLOW_SECONDS = 0.2  # a model call, scaled down


class NoOp(Agent):
    """Does nothing and replies nothing: what is left is the agent's own cost per message."""

    def process_message(self, message: Message) -> Any:
        return None


class Slow(Agent):
    """Spends 200 ms per message without replying, like a handler waiting on a model."""

    def process_message(self, message: Message) -> Any:
        time.sleep(SLOW_SECONDS)
        return None
