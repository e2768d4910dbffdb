"""A run frozen past its lease (SIGSTOP) is taken over, and sends nothing when it thaws.

Real `agentmail run` processes on one journal (SQLite and PostgreSQL): the first is frozen
inside a slow handler for longer than its lease, a second run declares it dead and
handles the message, then the first is let go. Exactly one reply reaches the requester,
the first run says why it stopped, and the journal verifies.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from agentmail.journal import events as ev
from agentmail.journal.verify import verify

from .conftest import Lab, journal_messages, kill

pytestmark = pytest.mark.slow


@pytest.fixture
def any_lab(lab: Lab, journal_url: str) -> Iterator[Lab]:
    """The recovery lab on each journal engine."""
    lab.db_url = journal_url
    yield lab


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _handled(lab: Lab) -> list[str]:
    return lab.side_effects.read_text().split() if lab.side_effects.exists() else []


@pytest.mark.parametrize("lease_a, lease_b", [(2, 2), (2, 30)],
                         ids=["same-lease", "observer-with-longer-lease"])
def test_a_run_frozen_past_its_lease_is_taken_over_and_never_sends(any_lab, lease_a, lease_b):
    lab = any_lab
    lab.send_requests(1)
    first = lab.spawn(handler="Slow", RECOVERY_SLEEP="4",
                      AGENTMAIL_LEASE_SECONDS=str(lease_a))
    second = None
    try:
        _wait(lambda: len(_handled(lab)) == 1, 60, "the first run to start its handler")
        first.send_signal(signal.SIGSTOP)  # a laptop lid closed, a VM paused, mid-handler
        time.sleep(lease_a + 1.5)
        second = lab.spawn(handler="Slow", RECOVERY_SLEEP="0.2",
                           AGENTMAIL_LEASE_SECONDS=str(lease_b))

        def answered() -> bool:
            with lab.journal() as journal:
                return [m.state for m in journal_messages(journal)
                        if m.direction == "in"] == ["acked"]
        _wait(answered, 60, "the second run to answer the request")
        first.send_signal(signal.SIGCONT)  # the frozen handler finishes, its reply composed
        out, _ = first.communicate(timeout=60)
        assert first.returncode == 1, out
        assert "declared dead" in out and "Traceback" not in out, out
    finally:
        for process in (first, second):
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                kill(process)
            tail = process.communicate()[0] if process.stdout and not process.stdout.closed \
                else ""
            print(f"--- pid {process.pid} exit {process.returncode}:\n{tail[-3000:]}")
    replies = lab.replies()
    assert sum(replies.values()) == 1, replies  # one reply, not two
    with lab.journal() as journal:
        [message] = [m for m in journal_messages(journal) if m.direction == "in"]
        kinds = [e.kind for e in journal.events_of_message(message.key)]
        assert kinds.count(ev.PROCESSED) == 1 and kinds.count(ev.SENT) == 1, kinds
        assert message.lease_token >= 2  # claimed, then taken over (and claimed again)
        report = verify(journal)
        assert report.ok, [d for d in report.tables if not d.clean]
