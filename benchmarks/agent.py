"""The agent end to end on the Gmail emulator: throughput, quota, journal, memory, latency.

    .venv/bin/python -m benchmarks.agent [--scenario NAME ...] [--scale 0.1] [--json-only]
        [--output FILE] [--profile DIR] [--workdir DIR] [--strict]

Each scenario starts a fresh emulator in this process, seeds the agent's mailbox
(directly in the emulator's store, with the provider's Authentication-Results, so
10,000 messages take seconds), then runs the agent in a child process — what
`agentmail run --emulator URL` runs: `Run` cycles with the mailbox, journal and
handler built from settings — so its peak RSS and CPU are its own, not the
emulator's. The child does its start-up (labels, reconciliation, and for the
trickle and idle scenarios a first empty poll), reports ready, and is timed from
the parent's "go" until every expected message is acked (or rejected /
dead-lettered), or a deadline.

Quota units, API calls and HTTP requests are the emulator's own counters for the
agent's account, counted from "go" (start-up is reported apart as
`startup_quota_units`). Journal events and bytes are those of the whole journal
file (SQLite + WAL) after the run. Latency is send → ack: the send time is when
the requester's `messages.send` returned, the ack time the `acked` event's `at`.
CPU seconds are the agent process's and this process's (the emulator, plus the
trickle's requester) over the timed phase: which side was the bottleneck.

Scenarios, with their sizes at `--scale 1` (the targeted ones; a full run takes about
five minutes on two cores):

- noop          1,000-message backlog, a handler that does nothing
- reply         1,000-message backlog, the default Agent (one reply each)
- slow-c1       64 messages, a 200 ms handler, concurrency 1
- slow-c8       the same at concurrency 8 (`concurrency`, $AGENTMAIL_CONCURRENCY)
- trickle       20 messages sent one per poll (after the previous ack), `--interval 1`
- rate-limited  the noop backlog with the emulator enforcing 6,000 units/user/min
- backlog-10k   10,000-message noop backlog, for peak RSS (flat vs noop's)
- idle          five polls of a mailbox with nothing new

Prints a table, the performance targets next to the measured figures (PASS/MISS), and
one JSON document (`"benchmark": "agent"`).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AGENT = "agent@bench.example"
REQUESTERS = 10  # distinct senders of the seeded backlog
REPO = Path(__file__).resolve().parents[1]
PROTOCOL = "@@bench "  # prefix of the child's report lines on stdout
UNLIMITED_BUDGET = 10**9  # the agent's quota budget when the emulator enforces none
GMAIL_LIMIT = 6000  # units per user per minute (projects since 2026-05)
IDLE_POLLS = 5
TRICKLE_PHASE = (0.05, 0.9)  # seconds from an ack to the next trickle send, uniformly drawn
TRICKLE_ACK_WAIT = 15.0  # seconds to wait for an ack before sending the next one anyway
FLAT_RSS_GROWTH = 0.10  # 10,000 vs 1,000 messages: "flat" is at most 10 % more

# The performance targets on a 2-core machine.
TARGET_UNITS_NO_REPLY = 22.0
TARGET_UNITS_REPLY = 122.0
TARGET_UNITS_TRICKLE = 32.0
TARGET_IDLE_UNITS = 2.0
TARGET_QUOTA_FRACTION = 0.95
TARGET_NOOP_RATE = 300.0
TARGET_SPEEDUP = 6.0
TARGET_RSS_MB = 150.0
TARGET_P50_S = 1.5


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    size: int  # messages at scale 1 (polls for "idle")
    minimum: int
    handler: str = "benchmarks.handlers:NoOp"
    concurrency: int = 1
    rate_limit: int | None = None
    mode: str = "backlog"  # backlog | trickle | idle
    interval: float = 0.1

    def messages(self, scale: float) -> int:
        if self.mode == "idle":
            return 0
        return max(self.minimum, round(self.size * scale))


SCENARIOS = [
    Scenario("noop", "1,000-message backlog, no-op handler", 1000, 20),
    Scenario("reply", "1,000-message backlog, default Agent (replies)", 1000, 20,
             handler="agentmail.agent:Agent"),
    Scenario("slow-c1", "200 ms handler, concurrency 1", 64, 8,
             handler="benchmarks.handlers:Slow"),
    Scenario("slow-c8", "200 ms handler, concurrency 8", 64, 8,
             handler="benchmarks.handlers:Slow", concurrency=8),
    Scenario("trickle", "one message per poll at --interval 1", 20, 3, mode="trickle",
             interval=1.0),
    Scenario("rate-limited", "backlog, emulator limit 6,000 units/user/min", 1000, 50,
             rate_limit=GMAIL_LIMIT, interval=1.0),
    Scenario("backlog-10k", "10,000-message backlog, no-op handler", 10000, 100),
    Scenario("idle", "polls with nothing new", IDLE_POLLS, IDLE_POLLS, mode="idle",
             interval=0.2),
]
BY_NAME = {s.name: s for s in SCENARIOS}


# --- seeding -----------------------------------------------------------------------------

def authenticated(raw: bytes, sender: str) -> bytes:
    """`raw` with the Authentication-Results Gmail would add for mail from `sender`."""
    domain = sender.rpartition("@")[2]
    eol = b"\r\n" if b"\r\n" in raw else b"\n"
    header = (f"Authentication-Results: mx.google.com; dkim=pass header.i=@{domain}; "
              f"spf=pass smtp.mailfrom={sender}; dmarc=pass header.from={domain}")
    return header.encode() + eol + raw


def requester(i: int) -> str:
    return f"client{i % REQUESTERS}@requests.example"


def seed(emu: Any, to: str, count: int) -> None:
    """Deliver `count` JSON requests, each its own conversation, straight into the store."""
    from agentmail import message as msg

    for i in range(count):
        sender = requester(i)
        out = msg.compose_request(from_addr=sender, to=to, subject=f"job {i}",
                                  payload={"task": "bench", "job": i})
        emu.deliver(authenticated(out.raw, sender), to=to)


def acked_count(db: Path) -> int:
    """How many `acked` events the journal holds so far (read-only, beside the writer)."""
    import sqlite3

    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM events WHERE kind = 'acked'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def trickle(emu_url: str, to: str, count: int, sent: dict[str, float], rng: random.Random,
            stop: threading.Event, db: Path, started: threading.Event) -> None:
    """Send `count` requests through a requester's own mailbox, one per poll of the agent.

    Each request goes out at a random moment between the previous one's ack and the agent's
    next poll (`--interval 1` after the cycle that acked it), so every poll finds exactly
    one message and the wait for the poll is uniformly spread, as for mail that arrives at
    any time. The first one is sent before the agent is told to go.
    """
    from agentmail import message as msg
    from agentmail.emulator.client import build_service

    sender = requester(0)
    with closing(build_service(emu_url, sender)) as svc:
        for i in range(count):
            if i:
                started.wait()
                deadline = time.monotonic() + TRICKLE_ACK_WAIT
                while acked_count(db) < i and time.monotonic() < deadline:
                    if stop.wait(0.01):
                        return
                if stop.wait(rng.uniform(*TRICKLE_PHASE)):
                    return
            out = msg.compose_request(from_addr=sender, to=to, subject=f"trickle {i}",
                                      payload={"task": "bench", "job": i})
            svc.users().messages().send(userId="me", body={
                "raw": base64.urlsafe_b64encode(out.raw).decode()}).execute()
            sent[_bare(out.message_id)] = time.time()
            if not i:
                started.wait()  # the agent's go comes after the first send


def _bare(message_id: str | None) -> str:
    return (message_id or "").strip().strip("<>")


# --- the agent's side (child process) ----------------------------------------------------

def _report(data: dict[str, Any]) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(data) + "\n")
    sys.stdout.flush()


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    Linux's `VmHWM` is the high-water mark of this program's own memory. Not `ru_maxrss`:
    Linux carries it across exec, so a child forked from a big parent (this benchmark,
    with the emulator's mailboxes in memory) would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, else KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def child(config: dict[str, Any]) -> int:
    """Run the agent like `agentmail run`; timed from the parent's "go" on stdin."""
    from agentmail.config import load_settings
    from agentmail.journal.store import Journal
    from agentmail.services import handlers
    from agentmail.services.mailboxes import open_mailbox
    from agentmail.services.runner import Run

    settings = load_settings(Path(config["dir"]) / "agent_config.json", overrides={
        "emulator": config["emulator"], "db": config["db"], "handler": config["handler"],
        "check_interval": config["interval"], "concurrency": config["concurrency"],
        "quota_units_per_minute": config["quota"]})
    agent = handlers.load_agent(settings.handler, config["email"])
    profiler = None
    timed_out = False
    with Journal.open(settings.db_url) as journal, \
            open_mailbox(settings, config["email"]) as mailbox, \
            Run(journal=journal, mailbox=mailbox, agent=agent, settings=settings) as run:
        for _ in range(config["warm_cycles"]):
            run.cycle()
        _report({"ready": True})
        if sys.stdin.readline().strip() != "go":
            return 1
        if config.get("profile"):
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()

        def done() -> int:
            t = run.totals
            return t.acked + t.rejected + t.dead_lettered

        base, cycles, errors = done(), 0, []
        cpu0, t0 = _cpu_seconds(resource.RUSAGE_SELF), time.monotonic()
        deadline = t0 + config["timeout"]
        while True:
            report = run.cycle()
            cycles += 1
            errors.extend(report.errors)
            if config["cycles"] and cycles >= config["cycles"]:
                break
            if config["expect"] and done() - base >= config["expect"]:
                break
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(config["interval"])
        seconds = time.monotonic() - t0
        cpu = _cpu_seconds(resource.RUSAGE_SELF) - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(config["profile"])
        totals = run.totals.as_dict()
    _report({"seconds": seconds, "cycles": cycles, "cpu_seconds": cpu, "timed_out": timed_out,
             "totals": totals, "cycle_errors": errors[:20], "cycle_error_count": len(errors),
             "peak_rss_mb": peak_rss_mb()})
    return 0


# --- the benchmark's side ----------------------------------------------------------------

def _env(concurrency: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMAIL_")}
    env["AGENTMAIL_CONCURRENCY"] = str(concurrency)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class AgentProcess:
    """The child running the agent, spoken to over its stdin/stdout."""

    def __init__(self, config: dict[str, Any], stderr_path: Path, concurrency: int) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.agent", "--child", json.dumps(config)],
            cwd=REPO, env=_env(concurrency), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True)

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
        self.proc.wait()
        self._stderr.close()
        tail = self.stderr_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the agent process exited ({self.proc.returncode}):\n{tail}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        self.proc.wait(timeout=60)
        self._close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            if stream is not None:
                stream.close()


def _account(stats: dict[str, Any], email: str) -> dict[str, Any]:
    acct = stats["accounts"].get(email.lower()) or {}
    return {"quota_units": acct.get("quota_units", 0), "calls": dict(acct.get("calls", {})),
            "http_requests": acct.get("http_requests", 0)}


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    calls = {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items()}
    return {"quota_units": after["quota_units"] - before["quota_units"],
            "calls": {k.removeprefix("gmail.users."): v for k, v in sorted(calls.items()) if v},
            "http_requests": after["http_requests"] - before["http_requests"]}


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def journal_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def read_journal(db: Path) -> dict[str, Any]:
    """Event counts and, per acked message, its Message-ID and ack time."""
    from agentmail.journal import events as ev
    from agentmail.journal.store import Journal, as_utc

    kinds: dict[str, int] = {}
    message_ids: dict[str, str] = {}
    acked_at: dict[str, float] = {}
    with Journal.open(str(db), upgrade=False) as journal:
        for e in journal.iter_events():
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
            if e.kind == ev.FETCHED and e.message_key:
                message_ids[e.message_key] = _bare(e.data.get("message_id"))
            elif e.kind == ev.ACKED and e.message_key and e.at is not None:
                acked_at[e.message_key] = as_utc(e.at).timestamp()
    acks = {message_ids[k]: at for k, at in acked_at.items() if k in message_ids}
    return {"events": sum(kinds.values()), "kinds": kinds, "acks": acks}


def _per(value: float | None, messages: int, digits: int = 2) -> float | None:
    return None if value is None or not messages else round(value / messages, digits)


def run_scenario(scenario: Scenario, *, scale: float, workdir: Path,
                 profile_dir: Path | None = None, seed_value: int = 8) -> dict[str, Any]:
    """Run one scenario in a fresh emulator and journal; returns its figures."""
    from agentmail.emulator import Emulator

    n = scenario.messages(scale)
    folder = workdir / scenario.name
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "journal.db"
    for leftover in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        leftover.unlink(missing_ok=True)
    rng = random.Random(seed_value)
    if scenario.mode == "trickle":
        timeout = n * 4.0 + 30
    elif scenario.rate_limit:
        # quota-bound time at the floor of 20 units a message, with room for missing it
        timeout = 3 * n * 20 / scenario.rate_limit * 60 + 120
    else:
        timeout = 60 + n * (0.25 if scenario.handler.endswith("Slow") else 0.05)
    profile = str(profile_dir / f"{scenario.name}.prof") if profile_dir else None
    config = {
        "email": AGENT, "dir": str(folder), "db": str(db), "handler": scenario.handler,
        "interval": scenario.interval, "concurrency": scenario.concurrency,
        "quota": scenario.rate_limit or UNLIMITED_BUDGET,
        "warm_cycles": 1 if scenario.mode in ("trickle", "idle") else 0,
        "expect": n, "cycles": IDLE_POLLS if scenario.mode == "idle" else 0,
        "timeout": timeout, "profile": profile,
    }
    with Emulator(rate_limit=scenario.rate_limit) as emu:
        seed_started = time.monotonic()
        if scenario.mode == "backlog":
            seed(emu, AGENT, n)
        seed_seconds = time.monotonic() - seed_started
        agent = AgentProcess({**config, "emulator": emu.url}, folder / "agent.stderr",
                             scenario.concurrency)
        stop, started = threading.Event(), threading.Event()
        sender: threading.Thread | None = None
        sent: dict[str, float] = {}
        try:
            agent.read()  # ready
            before_stats = emu.stats()
            before = _account(before_stats, AGENT)
            emu_cpu0 = _cpu_seconds(resource.RUSAGE_SELF)
            if scenario.mode == "trickle":
                sender = threading.Thread(target=trickle, args=(
                    emu.url, AGENT, n, sent, rng, stop, db, started), daemon=True)
                sender.start()
                while not sent and sender.is_alive():
                    time.sleep(0.005)
            agent.go()
            started.set()
            result = agent.read()
            stop.set()
            if sender is not None:
                sender.join(timeout=10)
            emu_cpu = _cpu_seconds(resource.RUSAGE_SELF) - emu_cpu0
            after_stats = emu.stats()
            agent.finish()
        except BaseException:
            stop.set()
            agent.kill()
            raise
    used = _delta(_account(after_stats, AGENT), before)
    size = journal_bytes(db)
    journal = read_journal(db)
    totals = result["totals"]
    messages = totals["acked"] + totals["rejected"] + totals["dead_lettered"] \
        if scenario.mode != "idle" else 0
    seconds = result["seconds"]
    calls = sum(used["calls"].values())
    latencies = [journal["acks"][mid] - at for mid, at in sent.items() if mid in journal["acks"]]
    figures: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "handler": scenario.handler,
        "concurrency": scenario.concurrency,
        "emulator_rate_limit": scenario.rate_limit,
        "interval": scenario.interval,
        "messages": messages,
        "expected_messages": n,
        "seconds": round(seconds, 3),
        "messages_per_s": round(messages / seconds, 2) if seconds and messages else None,
        "quota_units": used["quota_units"],
        "quota_units_per_message": _per(used["quota_units"], messages),
        "api_calls": calls,
        "api_calls_per_message": _per(calls, messages, 3),
        "http_requests": used["http_requests"],
        "http_requests_per_message": _per(used["http_requests"], messages, 3),
        "calls": used["calls"],
        "startup_quota_units": before["quota_units"],
        "journal_events": journal["events"],
        "journal_events_per_message": _per(journal["events"], messages),
        "journal_event_kinds": journal["kinds"],
        "journal_bytes": size,
        "journal_bytes_per_message": _per(size, messages, 0),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "latency_p50_s": _round(percentile(latencies, 50)),
        "latency_p99_s": _round(percentile(latencies, 99)),
        "latency_samples": len(latencies),
        "acked": totals["acked"],
        "failed": totals["failed"],
        "dead_lettered": totals["dead_lettered"],
        "rejected": totals["rejected"],
        "sent": totals["sent"],
        "journal_failed_events": journal["kinds"].get("failed", 0),
        "rate_limited_responses": after_stats["rate_limited"] - before_stats["rate_limited"],
        "cycles": result["cycles"],
        "cycle_errors": result["cycle_error_count"],
        "cycle_error_samples": result["cycle_errors"][:3],
        "timed_out": result["timed_out"],
        "agent_cpu_seconds": round(result["cpu_seconds"], 2),
        "emulator_cpu_seconds": round(emu_cpu, 2),
        "seed_seconds": round(seed_seconds, 2),
    }
    if scenario.mode == "idle":
        figures["polls"] = result["cycles"]
        figures["quota_units_per_poll"] = round(used["quota_units"] / result["cycles"], 2)
    if scenario.rate_limit:
        figures.update(quota_fraction(used["quota_units"], messages, seconds, scenario.rate_limit))
    if profile:
        figures["profile"] = profile
    return figures


def quota_fraction(units: int, messages: int, seconds: float, limit: int) -> dict[str, Any]:
    """Throughput as a fraction of the quota-bound maximum (units per minute over units per message).

    max messages/min = limit ÷ units per message, so the fraction is units spent per minute ÷
    limit. The emulator's limit is a rolling minute, which lets a client spend a whole
    minute's units at once: a run of a few minutes can exceed 1. `window_bound_seconds` is
    the least time any client needs for these units through that window (bursting a full
    window every 60 s); the second fraction compares with that.
    """
    if not messages or not seconds:
        return {"quota_bound_messages_per_min": None, "messages_per_min": None,
                "quota_fraction": None, "window_bound_seconds": None,
                "window_bound_fraction": None}
    per_message = units / messages
    bound = 60 * (math.ceil(units / limit) - 1)
    return {
        "quota_bound_messages_per_min": round(limit / per_message, 1),
        "messages_per_min": round(messages / seconds * 60, 1),
        "quota_fraction": round(units / seconds * 60 / limit, 3),
        "window_bound_seconds": bound,
        "window_bound_fraction": round(bound / seconds, 3) if bound else None,
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- targets -----------------------------------------------------------------------------

def targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The performance targets next to the measured figures; ok None when not measurable here."""
    rows: list[dict[str, Any]] = []

    def check(scenario: str, target: str, measured: Any, ok: Callable[[Any], bool],
              shown: str | None = None) -> None:
        if scenario not in results:
            return
        passed = None if measured is None else bool(ok(measured))
        if results[scenario].get("timed_out"):
            passed = False
        rows.append({"scenario": scenario, "target": target, "measured": measured,
                     "shown": shown if shown is not None else _show(measured), "ok": passed})

    r = results.get
    check("noop", f"<= {TARGET_UNITS_NO_REPLY:g} quota units/message (backlog, no reply)",
          (r("noop") or {}).get("quota_units_per_message"), lambda v: v <= TARGET_UNITS_NO_REPLY)
    check("noop", f">= {TARGET_NOOP_RATE:g} messages/s end to end (no-op, no rate limit)",
          (r("noop") or {}).get("messages_per_s"), lambda v: v >= TARGET_NOOP_RATE)
    check("reply", f"<= {TARGET_UNITS_REPLY:g} quota units/message (backlog, with reply)",
          (r("reply") or {}).get("quota_units_per_message"), lambda v: v <= TARGET_UNITS_REPLY)
    if "slow-c8" in results:
        c1 = (r("slow-c1") or {}).get("messages_per_s")
        c8 = results["slow-c8"].get("messages_per_s")
        speedup = round(c8 / c1, 2) if c1 and c8 else None
        results["slow-c8"]["speedup_vs_c1"] = speedup
        check("slow-c8", f">= {TARGET_SPEEDUP:g}x the throughput of concurrency 1", speedup,
              lambda v: v >= TARGET_SPEEDUP,
              None if speedup is not None else "n/a (needs slow-c1)")
    check("trickle", f"<= {TARGET_UNITS_TRICKLE:g} quota units/message incl. its polls",
          (r("trickle") or {}).get("quota_units_per_message"),
          lambda v: v <= TARGET_UNITS_TRICKLE)
    check("trickle", f"p50 send -> ack <= {TARGET_P50_S:g} s at --interval 1",
          (r("trickle") or {}).get("latency_p50_s"), lambda v: v <= TARGET_P50_S)
    if "rate-limited" in results:
        rl = results["rate-limited"]
        # A backlog that fits in one minute's units is never held back by the limit.
        bound = rl.get("quota_fraction") is not None and rl["quota_units"] > GMAIL_LIMIT
        check("rate-limited", f">= {TARGET_QUOTA_FRACTION:.0%} of the quota-bound rate",
              rl["quota_fraction"] if bound else None, lambda v: v >= TARGET_QUOTA_FRACTION,
              f"{rl['quota_fraction']:.1%} ({rl['messages_per_min']:g} of "
              f"{rl['quota_bound_messages_per_min']:g} msg/min; window bound "
              f"{rl['window_bound_fraction']:.1%})" if bound else
              f"n/a: {rl['quota_units']} units fit in one minute's quota (use --scale >= 0.3)")
        failures = rl["failed"] + rl["dead_lettered"] + rl["journal_failed_events"]
        check("rate-limited", "0 failed messages, 0 429s journaled as failures", failures,
              lambda v: v == 0, f"{failures} failed ({rl['rate_limited_responses']} 429s "
              "answered by the emulator)")
    if "backlog-10k" in results:
        big = results["backlog-10k"]
        check("backlog-10k", f"peak RSS <= {TARGET_RSS_MB:g} MB", big["peak_rss_mb"],
              lambda v: v <= TARGET_RSS_MB, f"{big['peak_rss_mb']:g} MB")
        small = (r("noop") or {}).get("peak_rss_mb")
        growth = round(big["peak_rss_mb"] / small - 1, 3) if small else None
        big["rss_growth_vs_noop"] = growth
        check("backlog-10k", f"RSS flat vs the noop backlog (<= +{FLAT_RSS_GROWTH:.0%})",
              growth, lambda v: v <= FLAT_RSS_GROWTH,
              f"{growth:+.1%} ({small:g} -> {big['peak_rss_mb']:g} MB, "
              f"{r('noop')['messages']} -> {big['messages']} msgs)" if growth is not None
              else "n/a (needs noop)")
    check("idle", f"<= {TARGET_IDLE_UNITS:g} quota units per idle poll",
          (r("idle") or {}).get("quota_units_per_poll"), lambda v: v <= TARGET_IDLE_UNITS)
    for name, figures in results.items():
        if name != "idle" and figures["messages"] < figures["expected_messages"]:
            rows.append({"scenario": name, "target": "every message acked",
                         "measured": figures["messages"], "ok": False,
                         "shown": f"{figures['messages']} of {figures['expected_messages']}"})
    return rows


def _show(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --- output ------------------------------------------------------------------------------

COLUMNS = [
    ("scenario", "scenario", "{}"), ("msgs", "messages", "{}"), ("s", "seconds", "{:.2f}"),
    ("msg/s", "messages_per_s", "{:.1f}"), ("units/msg", "quota_units_per_message", "{:.2f}"),
    ("calls/msg", "api_calls_per_message", "{:.3f}"),
    ("http/msg", "http_requests_per_message", "{:.3f}"),
    ("events/msg", "journal_events_per_message", "{:.2f}"),
    ("bytes/msg", "journal_bytes_per_message", "{:.0f}"), ("RSS MB", "peak_rss_mb", "{:.1f}"),
    ("p50 s", "latency_p50_s", "{:.3f}"), ("p99 s", "latency_p99_s", "{:.3f}"),
]


def _cell(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)


def table(results: dict[str, dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    rows = [[h for h, _, _ in COLUMNS]]
    rows += [[_cell(f, r.get(k)) for _, k, f in COLUMNS] for r in results.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("calls per message (emulator counters, from go):")
    for name, r in results.items():
        base = r["messages"] or r.get("polls") or 1
        calls = ", ".join(f"{k} {v / base:.3g}" for k, v in r["calls"].items()) or "none"
        extra = []
        if r.get("quota_units_per_poll") is not None:
            extra.append(f"{r['quota_units_per_poll']:g} units/poll")
        if r["rate_limited_responses"]:
            extra.append(f"{r['rate_limited_responses']} x 429")
        if r["cycle_errors"]:
            extra.append(f"{r['cycle_errors']} cycle errors")
        extra.append(f"cpu agent {r['agent_cpu_seconds']:g} s / emulator "
                     f"{r['emulator_cpu_seconds']:g} s")
        lines.append(f"  {name:<13} {calls}  [{'; '.join(extra)}]")
    lines.append("")
    lines.append("targets:")
    width = max((len(c["target"]) for c in checks), default=10)
    for c in checks:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[c["ok"]]
        lines.append(f"  {verdict}  {c['scenario']:<13} {c['target']:<{width}}  {c['shown']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=list(BY_NAME),
                        help="run only these (repeatable; default: all)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply message counts (0.1 for a quick run)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON document")
    parser.add_argument("--output", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="cProfile the agent's timed phase; print the top functions")
    parser.add_argument("--workdir", type=Path, help="keep journals and logs here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    names = args.scenario or [s.name for s in SCENARIOS]
    chosen = [BY_NAME[n] for n in BY_NAME if n in names]
    with tempfile.TemporaryDirectory(prefix="agentmail-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        results: dict[str, dict[str, Any]] = {}
        for scenario in chosen:
            if not args.json_only:
                print(f"... {scenario.name}: {scenario.description} "
                      f"({scenario.messages(args.scale) or IDLE_POLLS} "
                      f"{'polls' if scenario.mode == 'idle' else 'messages'})",
                      file=sys.stderr, flush=True)
            results[scenario.name] = run_scenario(scenario, scale=args.scale, workdir=workdir,
                                                  profile_dir=args.profile)
    checks = targets(results)
    document = {
        "benchmark": "agent", "scale": args.scale, "cpus": os.cpu_count(),
        "python": sys.version.split()[0], "scenarios": results, "targets": checks,
        "passed": sum(1 for c in checks if c["ok"] is True),
        "missed": sum(1 for c in checks if c["ok"] is False),
    }
    if not args.json_only:
        print(table(results, checks))
        if args.profile:
            print_profiles(results)
        print()
    text = json.dumps(document, indent=None if args.json_only else 1)
    print(text)
    if args.output:
        args.output.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return 1 if args.strict and document["missed"] else 0


def print_profiles(results: dict[str, dict[str, Any]], top: int = 15) -> None:
    import io
    import pstats

    for name, r in results.items():
        if not r.get("profile"):
            continue
        out = io.StringIO()
        pstats.Stats(r["profile"], stream=out).sort_stats("tottime").print_stats(top)
        print(f"\nprofile of the agent in {name} (top {top} by own time):")
        print("\n".join(line for line in out.getvalue().splitlines()
                        if line.strip() and not line.startswith(("   Ordered", "   List"))))


if __name__ == "__main__":
    sys.exit(main())
