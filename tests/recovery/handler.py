"""Handlers for the recovery tests: each records its side effect, then replies.

The side-effect log (one message key per line, path in $RECOVERY_SIDE_EFFECTS) is what a
handler with external effects would do; the tests check every request shows up in it.
"""

from __future__ import annotations

import os

from agentmail import Agent

LOG_VARIABLE = "RECOVERY_SIDE_EFFECTS"


def record(key: str) -> None:
    with open(os.environ[LOG_VARIABLE], "a", encoding="utf-8") as log:
        log.write(key + "\n")


class Recorder(Agent):
    """Records the message key, then replies once."""

    replies = 1

    def process_message(self, message):
        record(message.key)
        for part in range(1, self.replies + 1):
            self.reply_to_message(message, {"request": message.payload, "part": part})
        return {"replied": self.replies}


class TwoReplies(Recorder):
    """Records, then replies twice: a crash can fall between the two sends."""

    replies = 2


class Failing(Agent):
    """Fails every message until $RECOVERY_FIX exists (a file), then behaves like Recorder."""

    def process_message(self, message):
        if not os.path.exists(os.environ.get("RECOVERY_FIX", "/nonexistent")):
            raise RuntimeError("the model is down")
        record(message.key)
        self.reply_to_message(message, {"request": message.payload, "part": 1})


class Slow(Recorder):
    """Records, sleeps $RECOVERY_SLEEP seconds (default 3), then replies once: long enough
    to freeze its process mid-handler."""

    def process_message(self, message):
        import time

        record(message.key)
        time.sleep(float(os.environ.get("RECOVERY_SLEEP", "3")))
        self.reply_to_message(message, {"request": message.payload, "part": 1})
        return {"replied": 1}


class ExitOnPoison(Recorder):
    """Kills its own process (os._exit, no clean-up at all) on a payload {"poison": true};
    records and replies to everything else."""

    def process_message(self, message):
        if isinstance(message.payload, dict) and message.payload.get("poison"):
            os._exit(3)
        return super().process_message(message)
