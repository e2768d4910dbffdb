"""The journal under real concurrency: several processes, on SQLite and PostgreSQL.

- several processes opening a new journal at once all succeed (the migration is locked);
- a follower reading "events after seq N" never misses an event while writers append
  (commit order is seq order);
- writers racing on shared conversations (the same new Message-ID fetched by several
  accounts at once) neither crash nor deadlock, and the projections verify;
- on SQLite a reader never waits for a writer's open transaction;
- rebuild is refused while a run is live.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest
from sqlalchemy import text

from agentmail import errors
from agentmail.journal import events as ev
from agentmail.journal.engine import write_transaction
from agentmail.journal.store import Journal
from agentmail.journal.verify import verify

from .history import claimed, fetched, processed, sent, simple

# CI runs 4 writers x 60 messages; AGENTMAIL_SOAK=1 runs the full size, 8 x 200.
SOAK = os.environ.get("AGENTMAIL_SOAK") == "1"
ACCOUNTS = [f"agent{n}@example.com" for n in range(8 if SOAK else 4)]
PER_WRITER = 200 if SOAK else 60
SPAWN = multiprocessing.get_context("spawn")  # no fork of a process holding connections


def _open_journal(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    Journal.open(url).close()


def test_processes_opening_a_new_journal_at_once_all_succeed(journal_url):
    barrier = SPAWN.Barrier(3)
    procs = [SPAWN.Process(target=_open_journal, args=(journal_url, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with Journal.open(journal_url) as j:
        assert j.event_count() == 0


def _write_history(url: str, account: str, count: int, start: float) -> None:
    """One account's messages, all in the same conversations as the other writers'."""
    with Journal.open(url) as j:
        while time.time() < start:
            time.sleep(0.01)
        for n in range(count):
            pid = f"{account.split('@')[0]}-{n}"
            # Every writer fetches a copy of the same Message-ID n: they race to create
            # conversation n, and each reply links it again.
            j.append(fetched(account, pid, message_id=f"<shared-{n}@mail>",
                             references=[f"<shared-{n - 1}@mail>"] if n else []))
            j.append(claimed(account, pid))
            j.append(processed(account, pid))
            j.append(sent(account, pid))
            j.append(simple(ev.ACKED, account, pid))


@pytest.mark.slow
def test_writers_racing_on_shared_conversations_neither_crash_nor_lose_events(journal_url):
    with Journal.open(journal_url) as j:
        start = time.time() + 2.0
        procs = [SPAWN.Process(target=_write_history, args=(journal_url, a, PER_WRITER, start))
                 for a in ACCOUNTS]
        for p in procs:
            p.start()
        followed: list[int] = []
        cursor = 0

        def follow() -> None:
            nonlocal cursor
            while any(p.is_alive() for p in procs) or not followed or \
                    cursor < j.events_since(0)[-1].seq:
                for e in j.events_since(cursor, limit=500):
                    followed.append(e.seq)
                    cursor = e.seq
                time.sleep(0.005)

        follower = threading.Thread(target=follow)
        follower.start()
        for p in procs:
            p.join(timeout=300)
        follower.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * len(ACCOUNTS)
        stored = [e.seq for e in j.events_since(0)]
        assert len(stored) == len(ACCOUNTS) * PER_WRITER * 5
        assert followed == stored  # in order, none skipped while they were being written
        messages = [j.message(ev.message_key(a, f"{a.split('@')[0]}-0")) for a in ACCOUNTS]
        assert len({m.conversation_id for m in messages}) == 1  # one conversation, four copies
        report = verify(j)
        assert report.ok, [d for d in report.tables if not d.clean]


def test_an_sqlite_reader_never_waits_for_a_writer(sqlite_journal):
    sqlite_journal.append(fetched(ACCOUNTS[0], "m1"))
    held = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with write_transaction(sqlite_journal.engine) as conn:
            conn.execute(text("UPDATE accounts SET last_seq = last_seq"))
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(10)
        began = time.monotonic()
        assert sqlite_journal.message(ev.message_key(ACCOUNTS[0], "m1")).state == "pending"
        assert len(sqlite_journal.events_since(0)) == 1
        assert time.monotonic() - began < 1.0  # not the 30 s busy timeout
    finally:
        release.set()
        thread.join()


def test_rebuild_is_refused_while_a_run_is_live(journal):
    journal.start_run(ACCOUNTS[0], "r1", host="h", pid=1, is_alive=lambda r: False)
    journal.append(fetched(ACCOUNTS[0], "m1"))
    with pytest.raises(errors.UsageError, match="runs are live"):
        journal.rebuild(is_alive=lambda run: True)
    assert journal.rebuild(is_alive=lambda run: False) == 2  # run_started, fetched


def test_a_stale_token_cannot_change_the_message(journal):
    key = ev.message_key(ACCOUNTS[0], "m1")
    journal.append(fetched(ACCOUNTS[0], "m1"))
    first = journal.claim(key, run_id="r1", lease_seconds=0)
    row = journal.message(key)
    taken = journal.take_over(row, run_id="r2", lease_seconds=60, action="test")
    assert taken.token == first.token + 1
    stale = ev.Event(ev.PROCESSED, ACCOUNTS[0], message_key=key, run_id="r1",
                     data={"token": first.token, "outgoing": []})
    with pytest.raises(errors.LeaseLost):
        journal.append(stale)
    with pytest.raises(errors.LeaseLost):
        journal.renew(first, 60)
    assert journal.message(key).state == "claimed"
    journal.append(ev.Event(ev.PROCESSED, ACCOUNTS[0], message_key=key, run_id="r2",
                            data={"token": taken.token, "outgoing": []}))
    assert journal.message(key).state == "processed"
    with pytest.raises(errors.LeaseLost):  # processed is not a state a claim can start from
        journal.append(ev.Event(ev.RELEASED, ACCOUNTS[0], message_key=key, run_id="r2",
                                data={"token": taken.token}))
