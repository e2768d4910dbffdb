"""Model-based test of the message state machine across two runs of one mailbox.

Hypothesis drives random interleavings of: mail arriving, cycles of either run (crashing
at any step boundary of the pipeline), a run freezing and thawing later (a zombie that
still believes it holds its claims), lease expiry, a new run taking the mailbox over
(recovery), and operator replays. After every step: no reply was ever delivered twice.
At the end, once everything settles: every request is acked or dead-lettered, each
answered request has exactly one reply, and the journal verifies.

Real pieces throughout: the Gmail emulator with googleapiclient, an SQLite journal, the
pipeline and recovery code; only the clock is injected (leases expire without waiting).
"""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentmail import errors
from agentmail.agent import Agent
from agentmail.emulator import Emulator
from agentmail.emulator.client import build_service
from agentmail.journal import events as ev
from agentmail.journal.store import Journal
from agentmail.journal.verify import verify
from agentmail.pipeline import CycleReport, Pipeline
from agentmail.reconcile import reconcile
from agentmail.services.runner import run_is_alive
from tests.agents import agent_settings
from tests.trust import mail as m

pytestmark = pytest.mark.slow

CHECKPOINTS = [None, "after_claim_journaled", "after_claim", "after_processed", "after_send",
               "before_sent_journaled", "after_ack_labels"]
LEASE = 60.0


class Crash(BaseException):
    """The process dies here (BaseException: no `except Exception` of ours catches it)."""


class FailsOnRequest(Agent):
    """Answers each request, but fails the ones that ask to fail (they get dead-lettered)."""

    def process_message(self, message):
        if isinstance(message.payload, dict) and message.payload.get("fail"):
            raise RuntimeError("asked to fail")
        self.reply_to_message(message, {"ok": True})


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


_EMULATOR: Emulator | None = None


def emulator() -> Emulator:
    global _EMULATOR
    if _EMULATOR is None:
        _EMULATOR = Emulator().start()
    return _EMULATOR


class TwoRuns(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.emu = emulator()
        self.tmp = Path(tempfile.mkdtemp(prefix="agentmail-model-"))
        self.agent = m.address("agent", "agents.example")
        self.sender = m.address("asker", "corp.example")
        self.clock = Clock()
        self.journal = Journal.open(str(self.tmp / "journal.db"), clock=self.clock)
        self.settings = replace(agent_settings(self.tmp, self.emu.url), lease_seconds=LEASE,
                                max_attempts=2, backoff_base=0, backoff_max=0)
        self.alive = run_is_alive(self.settings, self.clock)
        self.runs: dict[str, Pipeline] = {}
        self.state: dict[str, str] = {}  # run id -> "live" | "frozen" | "crashed"
        self.requests: list[str] = []
        self.failing: set[str] = set()
        self.generation = 0
        self.frozen: dict[str, tuple[threading.Thread, threading.Event, list[BaseException]]] = {}

    # --- the world ----------------------------------------------------------------------

    def _pipeline(self, run_id: str) -> Pipeline:
        from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials
        from tests.agents import FAST_RETRY

        mailbox = GmailMailbox(self.agent, emulator_credentials(self.agent),
                               api_endpoint=self.emu.url, retry=FAST_RETRY)
        return Pipeline(journal=self.journal, mailbox=mailbox, agent=FailsOnRequest(self.agent),
                        settings=self.settings, run_id=run_id, sleep=lambda s: None)

    def _live(self) -> list[str]:
        return [r for r, s in self.state.items() if s == "live"]

    @rule(fail=st.booleans())
    def mail_arrives(self, fail: bool) -> None:
        mid = m.message_id()
        body = b'{"fail": true}\r\n' if fail else b'{"n": 1}\r\n'
        self.emu.deliver(m.mail(self.sender, self.agent, msg_id=mid, body=body), to=self.agent)
        self.requests.append(mid)
        if fail:
            self.failing.add(mid)

    @precondition(lambda self: not self._live())
    @rule()
    def a_run_starts(self) -> None:
        self.generation += 1
        run_id = f"run{self.generation}"
        try:
            self.journal.start_run(self.agent, run_id, host="model", pid=0,
                                   is_alive=self.alive, lease_seconds=LEASE)
        except errors.AlreadyRunning:
            return  # a frozen run's lease has not lapsed yet
        p = self._pipeline(run_id)
        self.runs[run_id], self.state[run_id] = p, "live"
        p.mailbox.ensure_labels(p.labels)
        reconcile(p, is_alive=self.alive, live_runs=self.journal.run)

    @precondition(lambda self: bool(self._live()))
    @rule(crash_at=st.sampled_from(CHECKPOINTS), nth=st.integers(1, 3))
    def a_cycle(self, crash_at: str | None, nth: int) -> None:
        run_id = self._live()[0]
        self._cycle(run_id, crash_at, nth)

    def _cycle(self, run_id: str, crash_at: str | None, nth: int) -> None:
        p = self.runs[run_id]
        seen = Counter[str]()

        def checkpoint(name: str) -> None:
            seen[name] += 1
            if name == crash_at and seen[name] == nth:
                raise Crash(name)

        p.checkpoint = checkpoint
        try:
            p.cycle()
        except Crash:
            self.state[run_id] = "crashed"
            self.journal.append(ev.Event(ev.RUN_STOPPED, self.agent, run_id=run_id,
                                         data={"reason": "crashed"}))
        except errors.RunFenced:
            pass

    @precondition(lambda self: bool(self._live()))
    @rule(freeze_at=st.sampled_from(CHECKPOINTS[1:]), nth=st.integers(1, 2))
    def a_run_freezes_midway(self, freeze_at: str, nth: int) -> None:
        """SIGSTOP at a step boundary: the cycle stops there, holding what it holds, and
        goes on from there when it thaws (however much later, whatever happened since)."""
        run_id = self._live()[0]
        p = self.runs[run_id]
        reached, thaw = threading.Event(), threading.Event()
        failures: list[BaseException] = []
        seen = Counter[str]()

        def checkpoint(name: str) -> None:
            seen[name] += 1
            if name == freeze_at and seen[name] == nth:
                reached.set()
                thaw.wait(120)

        def cycle() -> None:
            try:
                p.cycle()
            except BaseException as exc:  # surfaced when it thaws
                failures.append(exc)
            finally:
                reached.set()

        p.checkpoint = checkpoint
        thread = threading.Thread(target=cycle, daemon=True)
        thread.start()
        reached.wait(120)
        if not thread.is_alive():  # the cycle never got there: it just ran
            if failures:
                raise failures[0]
            return
        self.state[run_id] = "frozen"
        self.frozen[run_id] = (thread, thaw, failures)

    @rule()
    def time_passes_beyond_the_leases(self) -> None:
        self.clock.now += timedelta(seconds=LEASE + 1)

    @precondition(lambda self: bool(self.frozen))
    @rule()
    def a_frozen_run_thaws_and_carries_on(self) -> None:
        run_id, (thread, thaw, failures) = next(iter(self.frozen.items()))
        del self.frozen[run_id]
        thaw.set()
        thread.join(120)
        assert not thread.is_alive()
        if failures:
            raise failures[0]
        declared_dead = self.journal.run(run_id).status != "running"
        self.state[run_id] = "crashed" if declared_dead else "live"

    @precondition(lambda self: bool(self.failing))
    @rule()
    def an_operator_replays_the_dead_letters(self) -> None:
        for row in self.journal.failed_since(None, account=self.agent):
            try:
                self.journal.append(ev.Event(ev.REPLAY_REQUESTED, self.agent,
                                             message_key=row.key, data={"queued": True}))
            except errors.LeaseLost:
                pass  # it changed meanwhile: nothing to replay

    # --- what must always hold ----------------------------------------------------------

    def _replies(self) -> Counter[str]:
        with closing(build_service(self.emu.url, self.sender)) as svc:
            page = svc.users().messages().list(userId="me", maxResults=500,
                                               labelIds=["INBOX"]).execute()
            found: Counter[str] = Counter()
            for ref in page.get("messages", []):
                got = svc.users().messages().get(userId="me", id=ref["id"], format="metadata",
                                                 metadataHeaders=["Message-ID"]).execute()
                headers = {h["name"].lower(): h["value"] for h in got["payload"]["headers"]}
                found[headers.get("message-id", "")] += 1
        return found

    @invariant()
    def no_reply_is_ever_delivered_twice(self) -> None:
        twice = [mid for mid, n in self._replies().items() if n > 1]
        assert not twice, twice

    def teardown(self) -> None:
        try:
            self._settle()
        finally:
            for p in self.runs.values():
                p.mailbox.close()
            self.journal.close()

    def _settle(self) -> None:
        while self.frozen:
            self.a_frozen_run_thaws_and_carries_on()
        for run_id, s in self.state.items():
            if s in ("live", "frozen"):
                self.journal.append(ev.Event(ev.RUN_STOPPED, self.agent, run_id=run_id,
                                             data={"reason": "stopped"}))
                self.state[run_id] = "crashed"
        self.clock.now += timedelta(seconds=LEASE + 1)
        self.a_run_starts()
        run_id = self._live()[0]
        for _ in range(6):
            self.clock.now += timedelta(seconds=1)
            self._cycle(run_id, None, 1)
        inbound = {r.rfc_message_id: r for r in self.journal.in_flight(self.agent)}
        assert not inbound, inbound
        for mid in self.requests:
            [row] = self.journal.received_matching(mid, account=self.agent)
            expected = "dead_lettered" if mid in self.failing else "acked"
            assert row.state == expected, (mid, row.state, row.last_error)
        assert sum(self._replies().values()) == len(self.requests) - len(self.failing)
        report = verify(self.journal)
        assert report.ok, [d for d in report.tables if not d.clean]


TwoRuns.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
test_two_runs_never_send_twice_and_never_lose_a_message = TwoRuns.TestCase


def teardown_module() -> None:
    if _EMULATOR is not None:
        _EMULATOR.stop()
    _ = CycleReport  # the pipeline's report type, for readers of the model above
