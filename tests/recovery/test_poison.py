"""A message that kills the process is dead-lettered after max_attempts; the rest drain.

The handler calls os._exit on one payload among 50 (as an OOM kill or a segfaulting
extension would end the process: no clean-up, no journal entry). Each restart's recovery
charges the crashed attempt to that message only; after `max_attempts` crashes it is
dead-lettered and the mailbox drains normally: no crash loop.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from agentmail.journal.verify import verify

from .conftest import journal_messages

pytestmark = pytest.mark.slow

MAX_ATTEMPTS = 3


@pytest.mark.parametrize("workers", [1, 3], ids=["one-worker", "three-workers"])
def test_a_message_that_kills_the_process_is_dead_lettered_and_the_rest_drain(lab, workers):
    lab.config.write_text(json.dumps({"quota_units_per_minute": 10_000_000,
                                      "max_attempts": MAX_ATTEMPTS}))
    lab.send_requests(25)
    lab.send_requests(1, payload={"poison": True})
    poison = lab.requests[-1]
    lab.send_requests(24)
    exits = []
    for _ in range(MAX_ATTEMPTS + 3):
        done = lab.run("-n", "2", "--concurrency", str(workers), handler="ExitOnPoison",
                       timeout=120)
        exits.append(done.returncode)
        assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        if done.returncode == 0:
            break
    assert exits == [3] * MAX_ATTEMPTS + [0], exits  # died on it each time, then drained
    with lab.journal() as journal:
        inbound = {m.rfc_message_id: m for m in journal_messages(journal)
                   if m.direction == "in"}
        assert inbound[poison].state == "dead_lettered"
        assert inbound[poison].attempts == MAX_ATTEMPTS
        others = Counter(m.state for mid, m in inbound.items() if mid != poison)
        assert others == {"acked": 49}
        assert verify(journal).ok
    replies = lab.replies()
    assert all(n == 1 for n in replies.values())
    answered = Counter(in_reply_to for in_reply_to, _ in replies)
    assert answered == {r: 1 for r in lab.requests if r != poison}
