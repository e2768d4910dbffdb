"""Conversation queries at size: build a large journal, time `history` and `threads`.

    .venv/bin/python -m benchmarks.conversations [--events 1000000] [--conversations 100000]
        [--db PATH] [--samples 200]

How the journal is built: by direct bulk inserts into `events` and the projection
tables (`messages`, `outbox`, `conversations`, `message_refs`, `accounts`), not by
`Journal.append`, which applies projections event by event and would take many
minutes at a million events. The rows are exactly those the projections produce for
the same events: `tests/conversations/test_benchmark.py` builds a small journal this
way and checks that `journal verify` (a rebuild from the events through the real
projections) finds no difference.

Each conversation is a chain between two of `AGENTS` agent mailboxes, as the
pipeline journals it: agent x sends a request (`sent`, 1 event); the other agent
fetches, claims, processes, sends a reply and acks (5 events); replies go back and
forth; the last message is fetched, claimed, processed without a reply and acked
(4 events). 10 events per conversation is one request and one reply. Conversations
run `CONCURRENT` at a time with their events interleaved, as on a busy journal, so one
conversation's events are not neighbours on disk.

Timed, after the build, on `--samples` random conversations: what `agentmail history
--thread ID --events` queries (resolve the id, rotating through conversation id,
Gmail thread id, Message-ID without brackets and provider id; the summary; the
messages with their events), `threads --limit 20` (and with --email), and
`events --thread`. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from agentmail.journal import conversations as conv
from agentmail.journal import events as ev
from agentmail.journal import projections as proj
from agentmail.journal import tables as t
from agentmail.journal.store import Journal

AGENTS = 20  # mailboxes taking part
CONCURRENT = 1000  # conversations whose events interleave
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
RAW_BYTES = 600  # size of each message's raw bytes kept in its `fetched` event
HISTORY_BUDGET_MS = 50.0
THREADS_BUDGET_MS = 100.0
LEASE = timedelta(minutes=5)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _raw(text: str) -> str:
    body = (text * (RAW_BYTES // max(1, len(text)) + 1))[:RAW_BYTES]
    return base64.urlsafe_b64encode(body.encode()).decode()


@dataclass
class Chain:
    """One conversation: its events (seq unassigned) and how to project them."""

    number: int
    agents: tuple[str, str]
    replies: int
    steps: list[ev.Event] = field(default_factory=list)

    def message_id(self, j: int) -> str:
        return f"<{'req' if j == 0 else 'rep'}.{self.number}.{j}@bench.agentmail>"

    def sender(self, j: int) -> str:
        return self.agents[j % 2]

    def thread(self, account: str) -> str:
        return f"{self.number:x}{'ab'[self.agents.index(account)]}"

    def refs(self, j: int) -> list[str]:
        return [self.message_id(i) for i in range(j)]

    def subject(self, j: int) -> str:
        return f"{'Re: ' if j else ''}task {self.number}"

    def payload(self, j: int) -> dict[str, Any]:
        return {"conversation": self.number, "round": j, "text": f"step {j} of task {self.number}"}

    def out_pid(self, j: int) -> str:
        return f"{self.number:08x}s{j}"

    def in_pid(self, j: int) -> str:
        return f"{self.number:08x}r{j}"

    def build(self) -> list[ev.Event]:
        """The events, in order; `at` and `seq` are filled in when they are placed."""
        a = self.sender(0)
        self.steps = [ev.Event(ev.SENT, a, message_key=ev.message_key(a, self.out_pid(0)),
                               data=self._sent_data(0, None))]
        for j in range(self.replies + 1):
            self.steps += self._handling(j, reply=j < self.replies)
        return self.steps

    def _sent_data(self, j: int, outbox_id: str | None) -> dict[str, Any]:
        return {"outbox_id": outbox_id, "provider_id": self.out_pid(j),
                "thread_id": self.thread(self.sender(j)), "message_id": self.message_id(j),
                "in_reply_to": self.message_id(j - 1) if j else None, "references": self.refs(j),
                "sender": self.sender(j), "recipients": [self.sender(j + 1)],
                "subject": self.subject(j), "payload": self.payload(j), "recovered": False}

    def _handling(self, j: int, *, reply: bool) -> list[ev.Event]:
        """Agent x fetches message j and handles it (replying with message j + 1)."""
        x = self.sender(j + 1)
        key = ev.message_key(x, self.in_pid(j))
        run = f"run-{x}"
        fetched = ev.Event(ev.FETCHED, x, message_key=key, run_id=run, data={
            "provider_id": self.in_pid(j), "thread_id": self.thread(x), "labels": ["INBOX", "UNREAD"],
            "message_id": self.message_id(j), "in_reply_to": self.message_id(j - 1) if j else None,
            "references": self.refs(j), "sender": self.sender(j), "recipients": [x],
            "subject": self.subject(j), "date": None, "payload": self.payload(j),
            "auto_submitted": "auto-replied" if j else "auto-generated", "size": RAW_BYTES,
            "raw": _raw(self.message_id(j))})
        outbox_id = f"{key}#0"
        outgoing = [{"outbox_id": outbox_id, "message_id": self.message_id(j + 1),
                     "thread_id": self.thread(x), "recipients": [self.sender(j)],
                     "subject": self.subject(j + 1), "in_reply_to": self.message_id(j),
                     "references": self.refs(j + 1), "auto_submitted": "auto-replied",
                     "payload": self.payload(j + 1), "raw": _raw(self.message_id(j + 1))}]
        steps = [fetched,
                 ev.Event(ev.CLAIMED, x, message_key=key, run_id=run, attempt=1, data={}),
                 ev.Event(ev.PROCESSED, x, message_key=key, run_id=run, attempt=1, data={
                     "result": {"ok": True}, "history_point": None,
                     "outgoing": outgoing if reply else []})]
        if reply:
            steps.append(ev.Event(ev.SENT, x, message_key=key, run_id=run,
                                  data=self._sent_data(j + 1, outbox_id)))
        steps.append(ev.Event(ev.ACKED, x, message_key=key, run_id=run))
        return steps


def _at(seq: int) -> datetime:
    return T0 + timedelta(seconds=seq)


def _placed(e: ev.Event, seq: int, sent_at: dict[str, datetime]) -> ev.Event:
    """The event with its seq and time; data that depends on them (Date, lease) filled in."""
    at = _at(seq)
    data = dict(e.data)
    if e.kind == ev.FETCHED:
        data["date"] = sent_at[data["message_id"]].isoformat()
    elif e.kind == ev.CLAIMED:
        data["lease_until"] = (at + LEASE).isoformat()
    elif e.kind == ev.SENT:
        sent_at[data["message_id"]] = at
    return ev.Event(e.kind, e.account, data=data, message_key=e.message_key, run_id=e.run_id,
                    attempt=e.attempt, seq=seq, at=at)


@dataclass
class Rows:
    """Rows for every table, as the projections would leave them."""

    events: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[dict[str, Any]] = field(default_factory=list)
    refs: list[dict[str, Any]] = field(default_factory=list)
    accounts: dict[str, list[int]] = field(default_factory=dict)  # address -> [first, last]


def _project(chain: Chain, placed: list[ev.Event], rows: Rows) -> None:
    """Mirror of `projections.apply` for one chain's events (checked by a rebuild in tests)."""
    cid = proj.conversation_id_for(chain.message_id(0))
    copies: dict[str, dict[str, Any]] = {}
    for e in placed:
        d = e.data
        if e.kind in (ev.FETCHED, ev.SENT):
            key = e.message_key if e.kind == ev.FETCHED else ev.message_key(e.account,
                                                                            d["provider_id"])
            row = proj._message_row(key, e, d, "in" if e.kind == ev.FETCHED else "out",
                                    proj.PENDING if e.kind == ev.FETCHED else proj.SENT)
            copies[key] = {**row, "conversation_id": cid, "lease_run_id": None,
                           "lease_expires_at": None, "next_attempt_at": None, "last_error": None}
            span = rows.accounts.setdefault(e.account, [e.seq, e.seq])
            span[:] = [min(span[0], e.seq), max(span[1], e.seq)]
            if e.kind == ev.SENT and d.get("outbox_id"):
                out = rows.outbox[-1]
                out.update(state="sent", provider_id=d["provider_id"], sent_at=e.at)
            continue
        row = copies[e.message_key]
        row.update(last_seq=e.seq, updated_at=e.at)
        if e.kind == ev.CLAIMED:
            row.update(state=proj.CLAIMED, attempts=e.attempt, lease_run_id=e.run_id,
                       lease_expires_at=datetime.fromisoformat(d["lease_until"]))
        elif e.kind == ev.PROCESSED:
            row.update(state=proj.PROCESSED)
            for position, out in enumerate(d["outgoing"]):
                rows.outbox.append({
                    "outbox_id": out["outbox_id"], "account": e.account,
                    "source_key": e.message_key, "position": position,
                    "rfc_message_id": out["message_id"], "thread_id": out["thread_id"],
                    "recipients": _dumps(out["recipients"]), "subject": out["subject"],
                    "raw": out["raw"], "state": "queued", "provider_id": None, "sent_at": None,
                    "created_seq": e.seq})
        elif e.kind == ev.ACKED:
            row.update(state=proj.ACKED, lease_run_id=None, lease_expires_at=None)
    rows.messages += copies.values()
    people = sorted({p for r in copies.values()
                     for p in [r["sender"], *json.loads(r["recipients"])] if p})
    times = [r["sent_at"] for r in copies.values()]
    rows.conversations.append({
        "id": cid, "subject": chain.subject(0), "participants": _dumps(people),
        "message_count": chain.replies + 1, "first_at": min(times), "last_at": max(times),
        "created_seq": placed[0].seq, "last_seq": placed[-1].seq})
    rows.refs += [{"rfc_message_id": chain.message_id(j), "conversation_id": cid}
                  for j in range(chain.replies + 1)]


def _event_row(e: ev.Event) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at, "account": e.account, "run_id": e.run_id,
            "message_key": e.message_key, "kind": e.kind, "attempt": e.attempt,
            "data": e.encoded_data()}


def replies_for(events: int, conversations: int) -> int:
    """Replies per conversation so the total comes near `events` (1 + 5 * replies + 4 each)."""
    return max(0, round((events / max(1, conversations) - 5) / 5))


def build(journal: Journal, *, events: int, conversations: int,
          progress: Callable[[str], None] = lambda _line: None) -> int:
    """Fill an empty journal; returns the number of events written."""
    agents = [f"agent{n:02d}@bench.agentmail" for n in range(AGENTS)]
    replies = replies_for(events, conversations)
    seq = 0
    accounts: dict[str, list[int]] = {}
    for start in range(0, conversations, CONCURRENT):
        rows = Rows(accounts=accounts)
        chains = []
        for n in range(start, min(conversations, start + CONCURRENT)):
            a = agents[n % AGENTS]
            b = agents[(n % AGENTS + 1 + n // AGENTS % (AGENTS - 1)) % AGENTS]
            chain = Chain(n, (a, b), replies)
            chain.build()
            chains.append(chain)
        placed: dict[int, list[ev.Event]] = {c.number: [] for c in chains}
        sent_at: dict[str, datetime] = {}
        for step in range(len(chains[0].steps)):  # step by step across the batch: interleaved
            for chain in chains:
                seq += 1
                e = _placed(chain.steps[step], seq, sent_at)
                placed[chain.number].append(e)
                rows.events.append(_event_row(e))
        for chain in chains:
            _project(chain, placed[chain.number], rows)
        with journal.engine.begin() as c:
            for table, batch in ((t.events, rows.events), (t.messages, rows.messages),
                                 (t.outbox, rows.outbox), (t.conversations, rows.conversations),
                                 (t.message_refs, rows.refs)):
                c.execute(insert(table), batch)
        progress(f"  {start + len(chains):>9,} conversations, {seq:>10,} events")
    with journal.engine.begin() as c:
        c.execute(insert(t.accounts), [{"address": a, "first_seq": f, "last_seq": last}
                                       for a, (f, last) in accounts.items()])
    return seq


# --- timing --------------------------------------------------------------------------------

def _ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
            "max": round(ordered[-1], 2)}


def _history(journal: Journal, ident: str) -> None:
    """The queries of `agentmail history --thread ID --events`."""
    cid = conv.resolve_one(journal, ident)
    conv.summary(journal, cid)
    conv.conversation_messages(journal, cid, with_events=True)


def _ids(conversations: int, samples: int, seed: int) -> Iterator[str]:
    """Random conversations, named in turn by each kind of id `history --thread` accepts."""
    rng = random.Random(seed)
    for i in range(samples):
        chain = Chain(rng.randrange(conversations), ("", ""), 0)
        yield [proj.conversation_id_for(chain.message_id(0)),
               f"{chain.number:x}b",  # the recipient's Gmail thread id
               chain.message_id(0).strip("<>"),
               chain.in_pid(0)][i % 4]


def measure(journal: Journal, *, conversations: int, samples: int = 200,
            seed: int = 7) -> dict[str, Any]:
    """Timings in milliseconds (p50, p95, max) of each command's queries."""
    emails = [a.address for a in journal.accounts()]
    # Warm the caches once, as a second command on the same machine would find them.
    list(conv.list_conversations(journal, limit=20))
    ids = list(_ids(conversations, samples, seed))
    history = [_ms(lambda i=i: _history(journal, i)) for i in ids]
    threads = [_ms(lambda: conv.list_conversations(journal, limit=20)) for _ in range(samples)]
    by_email = [_ms(lambda e=e: conv.list_conversations(journal, email=e, limit=20))
                for e in (emails * (samples // max(1, len(emails)) + 1))[:samples]]
    cids = [conv.resolve_one(journal, i) for i in ids]
    events = [_ms(lambda c=c: list(conv.events_in(journal, conv.conversation_scope(journal, c))))
              for c in cids]
    return {"history": _stats(history), "threads_limit_20": _stats(threads),
            "threads_email_limit_20": _stats(by_email), "events_thread": _stats(events)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conversations",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--db", help="journal to build (must not exist; default: a temp file, "
                        "deleted afterwards)")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        db = args.db or str(Path(scratch) / "bench.db")
        if Path(db).exists():
            parser.error(f"{db} exists; pass a new path")
        say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        say(f"building {db}: ~{args.events:,} events, {args.conversations:,} conversations")
        with Journal.open(db) as journal:
            start = time.perf_counter()
            written = build(journal, events=args.events, conversations=args.conversations,
                            progress=say)
            built = time.perf_counter() - start
            timings = measure(journal, conversations=args.conversations, samples=args.samples)
        size_mb = Path(db).stat().st_size / 1e6
    budgets = {"history": HISTORY_BUDGET_MS, "threads_limit_20": THREADS_BUDGET_MS}
    print(f"\njournal: {written:,} events, {args.conversations:,} conversations, "
          f"{size_mb:,.0f} MB, built in {built:.1f} s; {args.samples} samples each\n")
    print(f"{'query':<28}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'budget':>9}")
    for name, s in timings.items():
        budget = budgets.get(name)
        mark = f"{budget:>6.0f} {'ok' if s['p95'] < budget else 'OVER'}" if budget else ""
        print(f"{name:<28}{s['p50']:>9.2f}{s['p95']:>9.2f}{s['max']:>9.2f}  {mark}")
    print(json.dumps({"benchmark": "conversations", "events": written,
                      "conversations": args.conversations, "db_mb": round(size_mb),
                      "build_s": round(built, 1), "samples": args.samples, "ms": timings,
                      "budget_ms": budgets}, sort_keys=True))
    ok = all(timings[k]["p95"] < v for k, v in budgets.items())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
