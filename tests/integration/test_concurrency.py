"""Parallel handlers: conversations overlap, each conversation's messages stay in order."""

from __future__ import annotations

import threading
import time

from agentmail.agent import Agent
from agentmail.journal.verify import verify

from .conftest import ALICE, BOB

AUTH = ("Authentication-Results: mx.google.com; dkim=pass header.i=@example.com; "
        "spf=pass smtp.mailfrom=alice@example.com; dmarc=pass header.from=example.com\r\n")


def _mail(conv: int, n: int) -> bytes:
    refs = " ".join(f"<c{conv}m{i}@example.com>" for i in range(n))
    lines = [AUTH.rstrip("\r\n"), f"From: {ALICE}", f"To: {BOB}", f"Subject: conversation {conv}",
             f"Message-ID: <c{conv}m{n}@example.com>", "Auto-Submitted: auto-generated",
             "X-Agentmail-Outbox-Id: x", "Content-Type: text/plain; charset=utf-8"]
    if refs:
        lines += [f"References: {refs}", f"In-Reply-To: <c{conv}m{n - 1}@example.com>"]
    return ("\r\n".join(lines) + f'\r\n\r\n{{"conv": {conv}, "n": {n}}}\r\n').encode()


class Recorder(Agent):
    """Sleeps like a model call, replies, and records order and overlap."""

    def __init__(self, email: str) -> None:
        super().__init__(email)
        self.lock = threading.Lock()
        self.order: dict[int, list[int]] = {}
        self.running = 0
        self.peak = 0

    def process_message(self, message):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.order.setdefault(message.payload["conv"], []).append(message.payload["n"])
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        self.reply_to_message(message, {"done": message.payload})


def test_conversations_run_in_parallel_and_each_stays_in_order(agents, emulator, journal):
    for n in range(3):  # arrival order: all first messages, then all second ones, ...
        for conv in range(4):
            emulator.deliver(_mail(conv, n), to=BOB)
    recorder = Recorder(BOB)
    bob = agents.run(BOB, recorder, concurrency=4)
    bob.cycle()
    assert recorder.order == {conv: [0, 1, 2] for conv in range(4)}
    assert 1 < recorder.peak <= 4
    assert bob.totals.acked == 12 and bob.totals.sent == 12
    assert verify(journal).ok


def test_one_worker_handles_one_message_at_a_time(agents, emulator, journal):
    for conv in range(3):
        emulator.deliver(_mail(conv, 0), to=BOB)
    recorder = Recorder(BOB)
    agents.run(BOB, recorder).cycle()
    assert recorder.peak == 1 and sum(len(v) for v in recorder.order.values()) == 3
