"""Rebuilding the projections from the events gives exactly the live projections."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmail.journal import events as ev
from agentmail.journal.store import Journal
from agentmail.journal.verify import verify

from .history import fetched, processed, sent, simple

ACCOUNTS = ["a@example.com", "b@example.com"]

# Each step is (message number, action); actions are applied only where they are legal.
steps = st.lists(st.tuples(st.integers(0, 7), st.sampled_from(
    ["fetch", "claim", "process", "send", "ack", "fail", "dead", "reject", "replay", "sync",
     "heartbeat"])), max_size=60)


def _play(journal: Journal, plan) -> None:
    state: dict[int, str] = {}
    outbox: dict[int, int] = {}
    journal.start_run(ACCOUNTS[0], "run1", host="h", pid=1, is_alive=lambda r: False)
    for n, action in plan:
        account = ACCOUNTS[n % 2]
        pid = f"m{n}"
        key = ev.message_key(account, pid)
        s = state.get(n)
        if action == "fetch" and s is None:
            parent = (n - 2) if n >= 2 and (n - 2) in state else None
            refs = [f"<m{parent}@mail>"] if parent is not None else []
            journal.append(fetched(account, pid, references=refs))
            state[n] = "pending"
        elif action == "claim" and s == "pending":
            if journal.claim(key, run_id="run1", lease_seconds=0):
                state[n] = "claimed"
        elif action == "process" and s == "claimed":
            journal.append(processed(account, pid, replies=2))
            state[n], outbox[n] = "processed", 0
        elif action == "send" and s == "processed" and outbox[n] < 2:
            journal.append(sent(account, pid, outbox[n]))
            outbox[n] += 1
        elif action == "ack" and s == "processed" and outbox[n] == 2:
            journal.append(simple(ev.ACKED, account, pid))
            state[n] = "acked"
        elif action == "fail" and s == "claimed":
            journal.append(simple(ev.FAILED, account, pid, error_class="E", error="x"),
                           simple(ev.RELEASED, account, pid, next_attempt_at=None))
            state[n] = "pending"
        elif action == "dead" and s == "claimed":
            journal.append(simple(ev.DEAD_LETTERED, account, pid))
            state[n] = "dead"
        elif action == "reject" and s == "pending":
            journal.append(simple(ev.REJECTED, account, pid, reason="unauthenticated"))
            state[n] = "rejected"
        elif action == "replay" and s == "dead":
            journal.append(simple(ev.REPLAY_REQUESTED, account, pid))
            state[n] = "pending"
        elif action == "sync":
            journal.append(ev.Event(ev.SYNCED, account, data={"history_id": str(n)}))
        elif action == "heartbeat":
            journal.heartbeat("run1", lease_seconds=60, progressed=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_rebuild_equals_the_live_projections(tmp_path_factory, plan):
    path = tmp_path_factory.mktemp("rebuild") / "j.db"
    with Journal.open(str(path)) as journal:
        _play(journal, plan)
        report = verify(journal)
        assert report.ok, [d for d in report.tables if not d.clean]
        before = verify(journal)
        journal.rebuild()
        after = verify(journal)
        assert before.ok and after.ok and after.events == before.events
