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


def test_a_crashed_claim_spends_an_attempt_only_if_its_handler_was_running(lab):
    lab.send_requests(REQUESTS)
    lab.run("-n", "1", AGENTMAIL_CRASH_AT="after_claim:1")  # a batch of 3 claimed, no handler ran
    lab.run("-n", "2")
    with lab.journal() as journal:
        rows = sorted((m for m in journal_messages(journal) if m.direction == "in"),
                      key=lambda m: m.first_seq)
        kinds = [[e.kind for e in journal.events_of_message(m.key)] for m in rows]
        # The run marks each claim while its handler runs: none was marked, so every claim
        # gets its attempt back and none records a failure.
        for claim in kinds:
            assert claim[:4] == [ev.FETCHED, ev.CLAIMED, ev.RECONCILED, ev.RELEASED]
            assert ev.FAILED not in claim
        assert {journal.message(m.key).attempts for m in rows} == {1}
    lab.check_all_done()


def test_a_claim_whose_handler_was_running_when_the_run_died_spends_an_attempt(lab):
    lab.send_requests(REQUESTS)
    lab.run("-n", "1", handler="ExitOnPoison")  # a warm-up: nothing poisoned yet
    lab.send_requests(1, payload={"poison": True})
    poison = lab.requests[-1]
    lab.send_requests(1)
    died = lab.run("-n", "1", handler="ExitOnPoison")
    assert died.returncode == 3
    lab.run("-n", "1", handler="Recorder")
    with lab.journal() as journal:
        rows = {m.rfc_message_id: m for m in journal_messages(journal) if m.direction == "in"}
        kinds = [e.kind for e in journal.events_of_message(rows[poison].key)]
        assert kinds[:5] == [ev.FETCHED, ev.CLAIMED, ev.RECONCILED, ev.FAILED, ev.RELEASED]
        assert journal.message(rows[poison].key).attempts == 2  # the crash, then the retry
        after = journal.message(rows[lab.requests[-1]].key)
        assert after.attempts == 1 and after.state == "acked"  # claimed behind it: refunded


def test_a_processing_label_that_no_claim_explains_is_removed(lab):
    lab.send_requests(1)
    assert lab.run("-n", "1").returncode == 0
    with lab.journal() as journal:
        [done] = [m for m in journal_messages(journal) if m.direction == "in"]
    lab.label(done.provider_id, "agent-processing")  # drift: a person, or a lost label change
    restarted = lab.run("-n", "1")
    assert "1 stray processing label(s) removed" in restarted.stdout
    lab.check_all_done()


def test_with_parallel_workers_no_claim_that_never_reached_a_handler_is_charged(lab):
    lab.send_requests(REQUESTS)  # one conversation each
    # The crashed run had two workers; the run that recovers it has one. The older rule
    # (charge each worker's first claim) would charge two messages no handler ever saw.
    lab.run("-n", "1", "--concurrency", "2", AGENTMAIL_CRASH_AT="after_claim:1")
    lab.run("-n", "2")
    with lab.journal() as journal:
        rows = sorted((m for m in journal_messages(journal) if m.direction == "in"),
                      key=lambda m: m.first_seq)
        charged = [ev.FAILED in [e.kind for e in journal.events_of_message(m.key)] for m in rows]
    assert charged == [False] * len(rows)
    lab.check_all_done()
