"""Appending events and the projections they keep, on every journal engine."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from agentmail import errors
from agentmail.journal import events as ev
from agentmail.journal import tables as t
from agentmail.journal.store import Journal
from agentmail.journal.verify import verify

from .history import claimed, fetched, processed, sent, simple

A = "agent@example.com"


def _count(journal, table):
    with journal.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_an_event_and_its_projection_commit_together(journal):
    journal.append(fetched(A, "m1"))
    row = journal.message(ev.message_key(A, "m1"))
    assert row.state == "pending" and row.direction == "in" and row.sender == "peer@example.com"
    assert [e.kind for e in journal.events_of_message(row.key)] == ["fetched"]


def test_an_error_in_the_middle_of_an_append_leaves_neither_events_nor_projections(journal):
    journal.append(fetched(A, "m1"))
    before = (_count(journal, t.events), _count(journal, t.messages))
    # The second event collides with the existing message: the first must roll back with it.
    with pytest.raises(errors.JournalConflict):
        journal.append(fetched(A, "m2"), fetched(A, "m1"))
    assert (_count(journal, t.events), _count(journal, t.messages)) == before
    assert journal.message(ev.message_key(A, "m2")) is None


def test_a_message_can_be_claimed_by_only_one_run(journal):
    journal.append(fetched(A, "m1"))
    key = ev.message_key(A, "m1")
    first = journal.claim(key, run_id="r1", lease_seconds=300)
    second = journal.claim(key, run_id="r2", lease_seconds=300)
    assert first is not None and first.attempt == 1
    assert second is None
    assert journal.message(key).lease_run_id == "r1"


def test_concurrent_claims_from_threads_give_each_message_to_exactly_one(tmp_path):
    path = str(tmp_path / "j.db")
    with Journal.open(path) as j:
        j.append(*[fetched(A, f"m{i}") for i in range(40)])
    winners: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(run_id: str) -> None:
        with Journal.open(path) as j:
            for i in range(40):
                if j.claim(ev.message_key(A, f"m{i}"), run_id=run_id, lease_seconds=0):
                    with lock:
                        winners.setdefault(f"m{i}", []).append(run_id)

    threads = [threading.Thread(target=worker, args=(f"r{n}",)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(winners) == sorted(f"m{i}" for i in range(40))
    assert all(len(runs) == 1 for runs in winners.values())


def test_released_messages_wait_for_their_backoff(journal):
    journal.append(fetched(A, "m1"))
    key = ev.message_key(A, "m1")
    journal.claim(key, run_id="r1", lease_seconds=0)
    later = journal.clock() + timedelta(hours=1)
    journal.append(simple(ev.FAILED, A, "m1", error_class="ValueError", error="boom",
                          retryable=True),
                   simple(ev.RELEASED, A, "m1", next_attempt_at=later.isoformat()))
    assert journal.claimable(A) == []
    assert journal.claim(key, run_id="r1", lease_seconds=0) is None
    assert journal.next_retry_at(A) == later


def test_a_second_live_run_on_one_mailbox_is_refused(journal):
    journal.start_run(A, "r1", host="h", pid=1, is_alive=lambda run: True)
    with pytest.raises(errors.AlreadyRunning, match="r1"):
        journal.start_run(A, "r2", host="h", pid=2, is_alive=lambda run: True)
    # A dead run is closed as crashed and the new one starts.
    journal.start_run(A, "r3", host="h", pid=3, is_alive=lambda run: False)
    assert journal.live_run(A).run_id == "r3"
    assert journal.last_run(A).run_id in ("r3", "r1")
    journal.start_run("other@example.com", "r4", host="h", pid=4, is_alive=lambda run: True)


def test_a_reply_joins_its_parents_conversation_and_the_outbox(journal):
    journal.append(fetched(A, "m1"), claimed(A, "m1"), processed(A, "m1"), sent(A, "m1"))
    parent = journal.message(ev.message_key(A, "m1"))
    reply = journal.message(ev.message_key(A, "sm1.0"))
    assert reply.direction == "out" and reply.conversation_id == parent.conversation_id
    assert [o.state for o in journal.outbox_of(parent.key)] == ["sent"]
    assert journal.unsent_outbox(parent.key) == []


def test_a_message_linking_two_conversations_merges_them(journal):
    journal.append(fetched(A, "a", message_id="<a@x>"), fetched(A, "b", message_id="<b@x>"))
    ca = journal.message(ev.message_key(A, "a")).conversation_id
    cb = journal.message(ev.message_key(A, "b")).conversation_id
    assert ca != cb
    journal.append(fetched(A, "c", message_id="<c@x>", references=["<a@x>", "<b@x>"]))
    ids = {journal.message(ev.message_key(A, p)).conversation_id for p in "abc"}
    assert ids == {ca}  # the older conversation survives
    assert _count(journal, t.conversations) == 1
    assert verify(journal).ok
