"""`agentmail run`: one live run per mailbox, cycles of the pipeline, a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from agentmail import errors
from agentmail.agent import Agent
from agentmail.config import Settings, load_settings
from agentmail.journal import events as ev
from agentmail.journal.store import Journal, as_utc
from agentmail.mailbox.base import Mailbox
from agentmail.pipeline import CycleReport, Pipeline, StepListener
from agentmail.reconcile import ReconcileReport, reconcile
from agentmail.services import handlers

log = logging.getLogger(__name__)

HEARTBEAT_FRACTION = 3  # heartbeats per lease period


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_is_alive(settings: Settings, clock: Callable[[], Any]) -> Callable[[Any], bool]:
    """A run is alive while it has not stopped, its own lease (`expires_at`, on the
    database's clock, extended by its heartbeats while it makes progress) has not lapsed
    and, on this host, its process exists. Observers apply the run's deadline, never their
    own lease setting. (A run that stopped cleanly can still have left work in flight, say
    a send the mailbox refused to take; it holds nothing any more.)"""
    host = socket.gethostname()

    def alive(run: Any) -> bool:
        if run.status != "running":
            return False
        expires = as_utc(run.expires_at) if run.expires_at is not None else \
            as_utc(run.heartbeat_at) + timedelta(seconds=settings.lease_seconds)  # older rows
        fresh = expires > clock()
        if run.host == host:
            return fresh and pid_alive(run.pid)
        return fresh

    return alive


def crash_hook(spec: str | None) -> Callable[[str], None] | None:
    """The `crash_at` testing hook: SIGKILL this process at the Nth pass of a checkpoint.

    `spec` is "name" or "name:N" (N defaults to 1). No clean-up runs, exactly as if the
    machine had lost power at that point: what recovery then finds is what a crash leaves.
    """
    if not spec:
        return None
    name, _, count = spec.partition(":")
    try:
        target = int(count or 1)
    except ValueError:
        raise errors.ConfigError(f"crash_at {spec!r} must look like after_processed:3") from None
    seen = 0

    def checkpoint(reached: str) -> None:
        nonlocal seen
        if reached == name:
            seen += 1
            if seen == target:
                log.warning("crash_at %s: killing this process", spec)
                os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint


def _chain(*hooks: Callable[[str], None] | None) -> Callable[[str], None] | None:
    present = [h for h in hooks if h is not None]
    if not present:
        return None

    def checkpoint(name: str) -> None:
        for hook in present:
            hook(name)

    return checkpoint


class _Heartbeat(threading.Thread):
    """Extends the run's leases every lease_seconds/3 while the run makes progress.

    The loop's own thread may be inside a handler for longer than a lease; this thread keeps
    the leases fresh meanwhile, so a slow handler is never taken from a live run -- but only
    while the loop advances or a handler is within `handler_timeout`: a run stuck anywhere
    else stops beating, its lease lapses and another run may take its mailbox over. A beat
    that finds the run declared dead fences it: the run stops without sending.
    """

    def __init__(self, owner: Run) -> None:
        super().__init__(name=f"heartbeat:{owner.run_id[:8]}", daemon=True)
        self.owner = owner
        self.stopping = threading.Event()

    def run(self) -> None:
        period = self.owner.settings.lease_seconds / HEARTBEAT_FRACTION
        while not self.stopping.wait(period):
            try:
                self.owner.heartbeat()
            except Exception as exc:  # a missed beat is retried; the lease has slack for it
                log.warning("%s: heartbeat failed: %s", self.owner.mailbox.address, exc)

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=10)


@dataclass
class RunOptions:
    iterations: int | None = None  # None: until stopped
    interval: float = 60.0
    stop: threading.Event = field(default_factory=threading.Event)
    # Set by a second Ctrl-C: abandon the handlers under way at once (they are journaled
    # as interrupted attempts and released); the loop raises errors.Interrupted.
    abandon: threading.Event = field(default_factory=threading.Event)


@dataclass
class RunResult:
    run_id: str
    cycles: int
    totals: CycleReport


class Run:
    """A registered run of one mailbox; use as a context manager so it always stops cleanly."""

    def __init__(self, *, journal: Journal, mailbox: Mailbox, agent: Agent, settings: Settings,
                 on_step: StepListener | None = None, on_cycle: Callable[[int, CycleReport], None]
                 | None = None, checkpoint: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] | None = None,
                 run_data: dict[str, Any] | None = None) -> None:
        self.journal = journal
        # Journaled with run_started: the handler (so `agentmail replay` runs the same one)
        # and what the caller adds (a replay says so).
        self.run_data = {"handler": handlers.spec_of(agent), **(run_data or {})}
        self.mailbox = mailbox
        self.settings = settings
        self.run_id = uuid.uuid4().hex
        self.on_cycle = on_cycle or (lambda n, r: None)
        self.pipeline = Pipeline(journal=journal, mailbox=mailbox, agent=agent, settings=settings,
                                 run_id=self.run_id, on_step=on_step,
                                 checkpoint=_chain(checkpoint, crash_hook(settings.crash_at)),
                                 sleep=sleep)
        self.totals = CycleReport()
        self.cycles = 0
        self.recovered = ReconcileReport()
        self.fenced = threading.Event()  # another run declared this one dead
        self._last_mailbox_error: tuple[Any, ...] | None = None
        self._is_alive = run_is_alive(settings, journal.clock)
        self._heartbeat = _Heartbeat(self)

    def __enter__(self) -> Run:
        self.journal.start_run(self.mailbox.address, self.run_id, host=socket.gethostname(),
                               pid=os.getpid(), is_alive=self._is_alive,
                               lease_seconds=self.settings.lease_seconds,
                               concurrency=self.settings.concurrency, handler_marks=True,
                               data=self.run_data)
        self._heartbeat.start()
        try:
            self.mailbox.ensure_labels(self.pipeline.labels)
            self.recovered = self.reconcile()
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return self

    def reconcile(self) -> ReconcileReport:
        """Repair what dead runs left in flight (at start, and when a lease lapses later)."""
        return reconcile(self.pipeline, is_alive=self._is_alive, live_runs=self.journal.run)

    def _orphans(self) -> bool:
        return any(r.lease_run_id != self.run_id
                   for r in self.journal.in_flight(self.mailbox.address))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._heartbeat.stop()
        reason = "stopped" if exc is None or isinstance(exc, KeyboardInterrupt) else (
            "fenced" if isinstance(exc, errors.RunFenced) else
            "interrupted" if isinstance(exc, errors.Interrupted) else "error")
        self.journal.append(ev.Event(ev.RUN_STOPPED, self.mailbox.address, run_id=self.run_id,
                                     data={"reason": reason, "summary": {
                                         "reason": reason, "cycles": self.cycles,
                                         **self.totals.as_dict()}}))

    def heartbeat(self) -> None:
        """One beat, if the run advanced within a lease period (see `_Heartbeat`)."""
        p = self.pipeline
        progressing = (time.monotonic() - p.last_progress < self.settings.lease_seconds
                       or p.handlers.within_limits())
        if not progressing:
            log.warning("%s: no progress for %.0f s: not renewing the run's leases",
                        self.mailbox.address, time.monotonic() - p.last_progress)
            return
        resync = getattr(self.journal.clock, "resync", None)
        if resync is not None:
            resync()
        if not self.journal.heartbeat(self.run_id, lease_seconds=self.settings.lease_seconds,
                                      progressed=True):
            log.error("%s: run %s was declared dead by another run (its heartbeat stalled "
                      "past its lease); stopping without sending anything more",
                      self.mailbox.address, self.run_id[:8])
            self.fenced.set()
            p.stop_requested.set()

    def cycle(self) -> CycleReport:
        """One poll; mailbox and journal outages are reported and retried next cycle."""
        self.pipeline.progressed()
        try:
            if self._orphans():
                self.recovered.actions.update(self.reconcile().actions)
            report = self.pipeline.cycle()
        except errors.MailboxError as exc:  # AuthError still stops the run: it needs a person
            report = CycleReport(errors=[f"mailbox: {exc}"])
            log.warning("%s: mailbox error, will retry next cycle: %s", self.mailbox.address, exc)
            self._journal_mailbox_error(exc)
        except errors.JournalBusy as exc:  # the database is away: pause, nothing is lost
            report = CycleReport(errors=[f"journal: {exc}"])
            log.warning("%s: journal unavailable, will retry next cycle: %s",
                        self.mailbox.address, exc)
        else:
            self._last_mailbox_error = None
        self.cycles += 1
        self.totals.add(report)
        self.on_cycle(self.cycles, report)
        return report

    def _journal_mailbox_error(self, exc: errors.MailboxError) -> None:
        """Journal the start of an outage (and each change of error), not every failed poll."""
        signature = (type(exc).__name__, exc.status, exc.reason)
        if signature == self._last_mailbox_error:
            return
        self._last_mailbox_error = signature
        self.journal.append(ev.Event(ev.FAILED, self.mailbox.address, run_id=self.run_id, data={
            "stage": "mailbox", "error_class": type(exc).__name__, "error": str(exc)[:2000],
            "status": exc.status, "reason": exc.reason,
            "retryable": isinstance(exc, errors.MailboxUnavailable)}))

    def loop(self, options: RunOptions) -> RunResult:
        self.pipeline.stop_requested = options.stop
        self.pipeline.abandon_requested = options.abandon
        self.pipeline.handlers.abandon = options.abandon
        if self.fenced.is_set():
            options.stop.set()
        while not options.stop.is_set():
            self.cycle()
            if self.fenced.is_set():
                break
            if options.iterations is not None and self.cycles >= options.iterations:
                break
            self._wait(options)
        if self.fenced.is_set():
            raise errors.RunFenced(
                f"{self.mailbox.address}: run {self.run_id[:8]} was declared dead by another "
                "run (its heartbeat stalled past its lease) and stopped; messages it held were "
                "taken over and nothing was sent for them twice")
        return RunResult(self.run_id, self.cycles, self.totals)

    def _wait(self, options: RunOptions) -> None:
        """Sleep until the next poll; waiting counts as progress (the run is healthy)."""
        deadline = time.monotonic() + options.interval
        slice_ = max(0.05, self.settings.lease_seconds / HEARTBEAT_FRACTION / 2)
        while not options.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.pipeline.progressed()
            options.stop.wait(min(left, slice_))


def log_step(kind: str, info: dict[str, Any]) -> None:
    """One log line per message step, for runs without a terminal printer."""
    message = info.get("message")
    if message is not None:
        log.info("%-13s %s → %s %r [%s]", kind, message.sender or "?", message.account,
                 message.subject, message.provider_id)
    else:
        log.info("%-13s %s", kind, info.get("message_id") or info.get("key", ""))


def run_agent_blocking(agent: Agent, *, email: str, config_path: str | None = None,
                       iterations: int | None = None, interval: float | None = None,
                       emulator: str | None = None) -> RunResult:
    """What `Agent.run()` does: the same as `agentmail run`, with logging for output."""
    from agentmail.services.mailboxes import open_mailbox

    settings = load_settings(config_path, overrides={"emulator": emulator})
    if not logging.getLogger().handlers:  # a plain script: show the steps as `run` would
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with Journal.open(settings.db_url) as journal, open_mailbox(settings, email) as mailbox, \
            Run(journal=journal, mailbox=mailbox, agent=agent, settings=settings,
                on_step=log_step) as run:
        log.info("%s: %s", email, run.recovered.describe())
        return run.loop(RunOptions(iterations=iterations,
                                   interval=settings.check_interval if interval is None
                                   else interval))
