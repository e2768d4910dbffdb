"""One deterministic crash per step boundary of the pipeline, then a clean restart.

The `crash_at` hook makes the real `agentmail run` SIGKILL itself at the Nth pass of a
checkpoint. Three requests arrive before the run starts, so they are claimed as one batch
and handled in order; what each crash leaves in flight, and what the restart repairs,
is then known exactly.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from agentmail.journal import events as ev

from .conftest import journal_messages

REQUESTS = 3


def _states(lab) -> Counter[str]:
    with lab.journal() as journal:
        return Counter(m.state for m in journal_messages(journal) if m.direction == "in")


def _reconciled(lab) -> list[dict]:
    with lab.journal() as journal:
        return [e.data for e in journal.events_since(0) if e.kind == ev.RECONCILED]


BOUNDARIES = [
    # crash_at, handler, journal states at the crash, what the restart reports
    pytest.param("after_claim_journaled:1", "Recorder", {"claimed": 3},
                 ["3 crashed claim(s) released"], id="after-claim-before-label"),
    pytest.param("after_claim:1", "Recorder", {"claimed": 3},
                 ["3 crashed claim(s) released"], id="after-claim"),
    pytest.param("after_processed:2", "Recorder", {"processed": 2, "claimed": 1},
                 ["1 crashed claim(s) released", "1 reply(ies) sent", "2 message(s) acked"],
                 id="after-processed"),
    pytest.param("between_sends:1", "TwoReplies", {"processed": 1, "claimed": 2},
                 ["2 crashed claim(s) released", "1 reply(ies) sent", "1 message(s) acked"],
                 id="between-sends"),
    pytest.param("after_send:2", "Recorder", {"processed": 2, "claimed": 1},
                 ["1 crashed claim(s) released", "2 message(s) acked"], id="after-send"),
    pytest.param("after_ack_labels:1", "Recorder", {"processed": 3},
                 ["3 message(s) acked"], id="mid-ack"),
]


@pytest.mark.parametrize(("crash_at", "handler", "at_crash", "repaired"), BOUNDARIES)
def test_a_crash_at_a_step_boundary_loses_nothing_and_repeats_no_reply(
        lab, crash_at, handler, at_crash, repaired):
    lab.send_requests(REQUESTS)

    crashed = lab.run("-n", "3", handler=handler, AGENTMAIL_CRASH_AT=crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert _states(lab) == at_crash

    restarted = lab.run("-n", "2", handler=handler)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    recovery = next(line for line in restarted.stdout.splitlines() if line.startswith("recovery:"))
    for text in repaired:
        assert text in recovery, recovery
    lab.check_all_done(replies_per_request=2 if handler == "TwoReplies" else 1)
    decisions = _reconciled(lab)
    assert decisions and all(d["found"] and d["action"] for d in decisions)


def test_only_the_claim_whose_handler_may_have_started_spends_an_attempt(lab):
    lab.send_requests(REQUESTS)
    lab.run("-n", "1", AGENTMAIL_CRASH_AT="after_claim:1")  # a batch of 3 claimed, no handler ran
    lab.run("-n", "2")
    with lab.journal() as journal:
        rows = sorted((m for m in journal_messages(journal) if m.direction == "in"),
                      key=lambda m: m.first_seq)
        kinds = [[e.kind for e in journal.events_of_message(m.key)] for m in rows]
        # One worker handles a batch in claim order: only the first could have been inside
        # the handler, so only it records a crashed attempt; the others get theirs back.
        assert kinds[0][:5] == [ev.FETCHED, ev.CLAIMED, ev.RECONCILED, ev.FAILED, ev.RELEASED]
        for later in kinds[1:]:
            assert later[:4] == [ev.FETCHED, ev.CLAIMED, ev.RECONCILED, ev.RELEASED]
            assert ev.FAILED not in later
        assert [m.attempts for m in journal_messages(journal) if m.direction == "in"
                and m.key == rows[0].key] == [2]
        assert {journal.message(m.key).attempts for m in rows[1:]} == {1}
    lab.check_all_done()


def test_a_processing_label_that_no_claim_explains_is_removed(lab):
    lab.send_requests(1)
    assert lab.run("-n", "1").returncode == 0
    with lab.journal() as journal:
        [done] = [m for m in journal_messages(journal) if m.direction == "in"]
    lab.label(done.provider_id, "agent-processing")  # drift: a person, or a lost label change
    restarted = lab.run("-n", "1")
    assert "1 stray processing label(s) removed" in restarted.stdout
    lab.check_all_done()


def test_with_parallel_workers_each_workers_first_claim_spends_an_attempt(lab):
    lab.send_requests(REQUESTS)  # one conversation each
    # The crashed run had two workers; the run that recovers it has one.
    lab.run("-n", "1", "--concurrency", "2", AGENTMAIL_CRASH_AT="after_claim:1")
    lab.run("-n", "2")
    with lab.journal() as journal:
        rows = sorted((m for m in journal_messages(journal) if m.direction == "in"),
                      key=lambda m: m.first_seq)
        charged = [ev.FAILED in [e.kind for e in journal.events_of_message(m.key)] for m in rows]
    assert charged == [True, True] + [False] * (len(rows) - 2)
    lab.check_all_done()
