"""Claims for an outside handler: the claim → process → ack pipeline, with the handler elsewhere.

`agentmail run` runs a handler in-process. Here the handler is outside (an LLM driving
the MCP tools): `Inbox.claim` takes pending messages of a mailbox with a lease and hands
them out; `reply` journals the answer as the handler's result (`processed` with the
outgoing message), sends it exactly once through the outbox and acks; `release` gives the
message back for later; `reject` dead-letters it with the handler's reason. Every step goes
through the same `Pipeline` methods `agentmail run` uses, so the journal reads the same and
recovery treats both alike.

While it holds claims, an `Inbox` is the mailbox's run: it registers in the journal (one
live run per mailbox, as always) and heartbeats, so other processes see a live owner. Its
heartbeats do not extend the leases of its claims: a lease is how long the outside handler
has to answer, and one that lapses sends the message back to the queue (a failed attempt,
retried like any other) the next time this mailbox is used.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agentmail import errors, policy
from agentmail import message as msg
from agentmail.agent import Agent
from agentmail.config import Settings
from agentmail.journal import approvals
from agentmail.journal import events as ev
from agentmail.journal import projections as proj
from agentmail.journal.store import Journal, as_utc
from agentmail.mailbox.base import Mailbox
from agentmail.pipeline import CycleReport, Pipeline, claim_of
from agentmail.reconcile import reconcile
from agentmail.services.runner import HEARTBEAT_FRACTION, run_is_alive

log = logging.getLogger(__name__)

MAX_CLAIMS = 50  # messages one `claim` call hands out at most
MAX_LEASE_SECONDS = 24 * 3600.0
CLAIM_SEPARATOR = "#"  # claim id: message key, separator, attempt number


class LeaseExpired(errors.AgentmailError):
    """The outside handler did not answer before its lease on the message ran out."""


class ClaimNotHeld(errors.AgentmailError):
    """The claim id names no message this handler holds now (answered, released, or lapsed)."""


@dataclass(frozen=True)
class Claim:
    """One message handed to the outside handler, with everything it needs to decide."""

    claim_id: str
    key: str
    attempt: int
    lease_until: datetime
    conversation_id: str | None
    message: msg.Message
    verdict: policy.Verdict  # what the trust policy found (always accepted here)


@dataclass(frozen=True)
class Answered:
    """What `reply` did: the reply's Message-ID, and whether it went out or was suppressed."""

    message_id: str
    conversation_id: str | None
    sent: bool
    suppressed: tuple[str, ...] = ()  # why the pipeline did not send it (loop guard)


def claim_id_of(key: str, attempt: int) -> str:
    return f"{key}{CLAIM_SEPARATOR}{attempt}"


def parse_claim_id(claim_id: str) -> tuple[str, int]:
    key, sep, attempt = claim_id.strip().rpartition(CLAIM_SEPARATOR)
    if not sep or not key or not attempt.isdigit():
        raise errors.UsageError(f"{claim_id!r} is not a claim id: use the claim_id that inbox "
                                "returned (like bob@example.com:18c2…#1)")
    return key, int(attempt)


def _held(row: Any) -> Any:
    """The claim a row records, as the `Pipeline` methods take it (key, token, attempt)."""
    return claim_of(row)


class _AnswerSink(Agent):
    """The in-process handler for replies to what this mailbox sent (Auto-Submitted:
    auto-replied): they are answers, read through the conversation, not requests to handle;
    like `agentmail run`'s default agent, nothing is sent back."""

    def process_message(self, message: msg.Message) -> Any:
        return {"status": "answer", "delivered": "conversation"}


class _OneReply(Agent):
    """The outside handler's answer, given to the pipeline as a handler's result."""

    def __init__(self, payload: Any, allow_auto_reply: bool) -> None:
        super().__init__()
        self.payload = payload
        self.allow_auto_reply = allow_auto_reply

    def process_message(self, message: msg.Message) -> Any:
        self.reply_to_message(message, self.payload, allow_auto_reply=self.allow_auto_reply)
        return {"status": "replied", "handler": "outside"}


class OutsidePipeline(Pipeline):
    """A `Pipeline` whose handler is outside: a cycle fetches and screens mail but claims
    only on request. The claim, result, send, ack, release and dead-letter steps are the
    pipeline's own."""

    journal: Journal  # the store itself: approvals are read from its tables

    def process_batch(self, report: CycleReport) -> bool:
        self.settle_answers(report)
        return False  # requests wait for the outside handler to claim them

    def settle_answers(self, report: CycleReport) -> None:
        """Ack pending replies to our own mail (see `_AnswerSink`) through the pipeline."""
        rows = self.journal.claimable(self.address, limit=self.settings.max_messages)
        answers = [r for r in rows if self.message_of(r.key).auto_submitted == msg.AUTO_REPLIED]
        if answers:
            self.process_rows(answers, report)

    def claim_for_handler(self, limit: int, lease_seconds: float) -> list[Any]:
        """Claim up to `limit` pending requests, oldest first; returns the rows as claimed."""
        self.settle_answers(CycleReport())
        rows = self.journal.claimable(self.address, limit=limit)
        return self.claim_keys([r.key for r in rows], lease_seconds)

    def claim_keys(self, keys: Sequence[str], lease_seconds: float) -> list[Any]:
        """Claim these pending messages for the outside handler; the rows as claimed."""
        taken = self.journal.claim_many(list(keys), run_id=self.run_id,
                                        lease_seconds=lease_seconds, data={"handler": "outside"})
        for claim in taken:  # handed to the outside handler now: as good as started
            self.journal.mark_started(claim)
        claimed = [r for r in (self.journal.message(c.key) for c in taken) if r is not None]
        if claimed:
            self._label([r.provider_id for r in claimed], add=[self.settings.label_processing],
                        report=CycleReport())
        return claimed

    def expire_leases(self) -> int:
        """Send back to the queue every claim of this run whose lease ran out (a failed
        attempt, retried with backoff or dead-lettered when attempts are used up)."""
        now = self.journal.clock()
        lapsed = [r for r in self.journal.in_flight(self.address)
                  if r.lease_run_id == self.run_id and r.state == proj.CLAIMED
                  and r.lease_expires_at is not None and as_utc(r.lease_expires_at) <= now
                  # a reply waiting for a person's approval keeps its claim meanwhile
                  and approvals.open_for_message(self.journal, r.key) is None]
        for row in lapsed:
            until = row.lease_expires_at
            assert until is not None  # lapsed ones have a deadline
            self.fail_attempt(_held(row), LeaseExpired(
                f"the outside handler did not answer by {until.isoformat()}"), CycleReport())
        return len(lapsed)

    def compose_answer(self, row: Any, payload: Any, *,
                       allow_auto_reply: bool) -> tuple[Any, Any]:
        """The handler result and outbox of the outside handler's reply, checked by the
        outgoing policy (OutgoingRejected) before anything is journaled: the claim then
        stays the handler's, to fix the reply or release the message."""
        handler = _OneReply(payload, allow_auto_reply)
        result, outbox = handler.handle(self.message_of(row.key), self.address,
                                        salt=self._salt(row.key))
        self.screen.check_outgoing(outbox.items)
        return result, outbox

    def answer(self, row: Any, payload: Any, *, allow_auto_reply: bool) -> Answered:
        """Journal the outside handler's reply as its result, send it once, ack the message."""
        message = self.message_of(row.key)
        result, outbox = self.compose_answer(row, payload, allow_auto_reply=allow_auto_reply)
        reply = outbox.items[0]
        report = CycleReport()
        claim = _held(row)
        done = self._after_handler(claim, message, (result, outbox), report)
        if done:
            self.ack([claim], report)
        suppressed: tuple[str, ...] = ()
        if report.loop_guarded:
            guard = next(e for e in reversed(self.journal.events_of_message(row.key))
                         if e.kind == ev.LOOP_GUARDED)
            suppressed = tuple(guard.data.get("blockers", []))
        if report.dead_lettered:
            raise errors.MailboxRejected(
                f"the mailbox refused to send the reply {reply.message_id}: "
                f"{'; '.join(report.errors) or 'see agentmail history'}; the message is "
                "dead-lettered for a person to look at")
        if not done and not suppressed:
            raise errors.MailboxUnavailable(
                f"the reply {reply.message_id} is journaled but could not be sent yet "
                f"({'; '.join(report.errors) or 'mailbox unavailable'}); it goes out exactly "
                "once when the mailbox answers again")
        return Answered(reply.message_id, row.conversation_id, sent=bool(report.sent),
                        suppressed=suppressed)

    def give_back(self, row: Any, *, delay: float, reason: str) -> datetime | None:
        """Release a claimed message for a later attempt; dead-letter it once attempts are
        used up (as a failing handler's would be). Returns when it can be claimed again."""
        s = self.settings
        if row.attempts >= s.max_attempts:
            self.dead_letter(row, reason=f"released after the last attempt: {reason}",
                             kind="max_attempts")
            return None
        self._label([row.provider_id], remove=[s.label_processing], report=CycleReport())
        at = self.journal.clock() + timedelta(seconds=max(0.0, delay))
        self.journal.append(ev.Event(ev.RELEASED, self.address, message_key=row.key,
                                     run_id=self.run_id, attempt=row.attempts, data={
                                         "next_attempt_at": at.isoformat(),
                                         "reason": "handler_released",
                                         "token": row.lease_token,
                                         "detail": reason[:2000]}))
        return at

    def dead_letter(self, row: Any, *, reason: str, kind: str = "handler_rejected") -> None:
        """The handler gives up on the message: journal why, label it failed, dead-letter."""
        s = self.settings
        self.journal.append(ev.Event(ev.FAILED, self.address, message_key=row.key,
                                     run_id=self.run_id, attempt=row.attempts, data={
                                         "stage": "handler", "error_class": "HandlerRejected",
                                         "error": reason[:2000], "retryable": False,
                                         "token": row.lease_token}))
        self._label([row.provider_id], add=[s.label_failed], remove=[s.label_processing],
                    report=CycleReport())
        self.journal.append(ev.Event(ev.DEAD_LETTERED, self.address, message_key=row.key,
                                     run_id=self.run_id, attempt=row.attempts,
                                     data={"reason": kind, "detail": reason[:2000],
                                           "token": row.lease_token}))


class _Heartbeat(threading.Thread):
    """Keeps the mailbox's run alive in the journal; never extends the claims' leases."""

    def __init__(self, owner: MailboxRun) -> None:
        super().__init__(name=f"inbox-heartbeat:{owner.address}", daemon=True)
        self.owner = owner
        self.stopping = threading.Event()

    def run(self) -> None:
        period = self.owner.settings.lease_seconds / HEARTBEAT_FRACTION
        while not self.stopping.wait(period):
            try:
                self.owner.heartbeat()
            except Exception as exc:  # a missed beat is retried; the lease has slack for it
                log.warning("%s: heartbeat failed: %s", self.owner.address, exc)


class MailboxRun:
    """This process as the live run of one mailbox whose handler is outside."""

    def __init__(self, journal: Journal, mailbox: Mailbox, settings: Settings) -> None:
        self.journal = journal
        self.mailbox = mailbox
        self.settings = settings
        self.address = mailbox.address
        self.run_id = uuid.uuid4().hex
        self.pipeline = OutsidePipeline(journal=journal, mailbox=mailbox,
                                        agent=_AnswerSink(mailbox.address), settings=settings,
                                        run_id=self.run_id)
        self.is_alive = run_is_alive(settings, journal.clock)
        self._heartbeat = _Heartbeat(self)

    def start(self) -> MailboxRun:
        self.journal.start_run(self.address, self.run_id, host=socket.gethostname(),
                               pid=os.getpid(), is_alive=self.is_alive,
                               lease_seconds=self.settings.lease_seconds, concurrency=1,
                               handler_marks=True, handler="outside")
        self._heartbeat.start()
        try:
            self.mailbox.ensure_labels(self.pipeline.labels)
            self.repair()
        except BaseException:
            self.stop("error")
            raise
        return self

    def heartbeat(self) -> None:
        self.journal.heartbeat(self.run_id, lease_seconds=self.settings.lease_seconds,
                               progressed=True, extend_claims=False)

    def repair(self) -> None:
        """Finish or undo what dead runs left in flight, as every run does when it starts."""
        if any(r.lease_run_id != self.run_id for r in self.journal.in_flight(self.address)):
            found = reconcile(self.pipeline, is_alive=self.is_alive, live_runs=self.journal.run)
            if found.total:
                log.info("%s: recovery: %s", self.address, found.describe())

    def cycle(self) -> CycleReport:
        """Fetch and screen new mail, finish this run's unsent replies, lapse old leases."""
        self.pipeline.expire_leases()
        self.repair()
        return self.pipeline.cycle()

    def stop(self, reason: str = "stopped") -> None:
        self._heartbeat.stopping.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=10)
        self.journal.append(ev.Event(ev.RUN_STOPPED, self.address, run_id=self.run_id,
                                     data={"reason": reason, "handler": "outside"}))


@dataclass
class _Served:
    """One mailbox the outside handler acts for; `lock` serialises its mailbox calls (a
    mailbox adapter is used by one thread at a time; tool calls arrive on several)."""

    mailbox: Mailbox
    lock: threading.RLock = field(default_factory=threading.RLock)
    run: MailboxRun | None = None


class Inbox:
    """The mailboxes an outside handler acts for, on one journal.

    `mailboxes` maps each address to its opened adapter; the first is the default. A
    mailbox becomes this process's run the first time it must be polled or claimed from,
    unless another live run (`agentmail run`) already processes it: then that run polls
    it and handles its mail, and claims here are refused.
    """

    def __init__(self, journal: Journal, settings: Settings,
                 mailboxes: Sequence[Mailbox]) -> None:
        self.journal = journal
        self.settings = settings
        self._served = {m.address: _Served(m) for m in mailboxes}
        self._closed = False

    @property
    def addresses(self) -> list[str]:
        return list(self._served)

    def served(self, address: str | None) -> str:
        """The address to act for: `address`, or the first one served."""
        if not self._served:
            raise errors.UsageError("this server acts for no mailbox: start it with --email")
        if address is None:
            return next(iter(self._served))
        wanted = address.strip().lower()
        for known in self._served:
            if known.lower() == wanted:
                return known
        raise errors.UsageError(f"this server does not act for {address!r}; it serves "
                                f"{', '.join(self._served)}")

    def mailbox(self, address: str) -> Mailbox:
        return self._served[self.served(address)].mailbox

    @contextmanager
    def using(self, address: str) -> Iterator[Mailbox]:
        """The mailbox of `address`, held for this thread alone while the block runs."""
        served = self._served[self.served(address)]
        with served.lock:
            yield served.mailbox

    def runs_here(self, address: str) -> bool:
        """Is this process the live run of `address`?"""
        return self._served[self.served(address)].run is not None

    def polled_elsewhere(self, address: str) -> Any | None:
        """The live run of another process that processes `address`, if there is one."""
        served = self._served[self.served(address)]
        run = self.journal.live_run(served.mailbox.address)
        if run is None or (served.run is not None and run.run_id == served.run.run_id):
            return None
        return run if run_is_alive(self.settings, self.journal.clock)(run) else None

    def _run(self, address: str) -> MailboxRun:
        """This process's run of `address`, started on first use (call with its lock held)."""
        served = self._served[self.served(address)]
        if self._closed:
            raise errors.UsageError("the inbox is closed")
        if served.run is None:
            other = self.polled_elsewhere(address)
            if other is not None:
                raise errors.AlreadyRunning(
                    f"{address} is processed by run {other.run_id[:8]} (pid {other.pid} on "
                    f"{other.host}), which handles its requests; claim from a mailbox no "
                    "`agentmail run` processes")
            served.run = MailboxRun(self.journal, served.mailbox, self.settings).start()
        return served.run

    # --- what the outside handler calls -----------------------------------------------------

    def poll(self, address: str) -> bool:
        """Fetch and screen new mail of `address` now, unless another run polls it.
        True when this process polled it."""
        address = self.served(address)
        with self.using(address):
            if self._served[address].run is None and self.polled_elsewhere(address):
                return False
            self._run(address).cycle()
        return True

    def claim(self, address: str | None = None, *, limit: int = 10,
              lease_seconds: float | None = None) -> list[Claim]:
        """Take up to `limit` new pending requests of the mailbox; return every claim this
        handler holds there (new ones and earlier ones whose lease still runs), oldest first."""
        address = self.served(address)
        limit = max(0, min(int(limit), MAX_CLAIMS))
        lease = self.settings.lease_seconds if lease_seconds is None else float(lease_seconds)
        if not 0 < lease <= MAX_LEASE_SECONDS:
            raise errors.UsageError(f"lease_s must be between 0 and {MAX_LEASE_SECONDS:.0f} "
                                    f"seconds, got {lease_seconds}")
        with self.using(address):
            run = self._run(address)
            run.cycle()
            if limit:
                run.pipeline.claim_for_handler(limit, lease)
            held = [r for r in self.journal.in_flight(address)
                    if r.lease_run_id == run.run_id and r.state == proj.CLAIMED]
            return [self._claim(run, r) for r in held]

    def _claim(self, run: MailboxRun, row: Any) -> Claim:
        message = run.pipeline.message_of(row.key)
        return Claim(claim_id=claim_id_of(row.key, row.attempts), key=row.key,
                     attempt=row.attempts, lease_until=as_utc(row.lease_expires_at),
                     conversation_id=row.conversation_id, message=message,
                     verdict=policy.evaluate(message, run.pipeline.screen.policy))

    @contextmanager
    def holding(self, claim_id: str) -> Iterator[tuple[MailboxRun, Any]]:
        """The run and row of a claim this handler holds now; `ClaimNotHeld` otherwise."""
        key, attempt = parse_claim_id(claim_id)
        row = self.journal.message(key)
        if row is None or row.direction != "in" or row.account not in self._served:
            raise ClaimNotHeld(f"no message {key!r} in the mailboxes this server serves")
        with self.using(row.account):
            run = self._served[row.account].run
            if run is not None:
                run.pipeline.expire_leases()
            row = self.journal.message(key)
            assert row is not None  # messages are never deleted
            if (run is None or row.state != proj.CLAIMED or row.lease_run_id != run.run_id
                    or row.attempts != attempt):
                raise ClaimNotHeld(
                    f"claim {claim_id} is not held any more (the message is {row.state}"
                    f"{', claimed again' if row.attempts > attempt else ''}); a lapsed lease "
                    "sends a message back to the queue: call inbox for the current claims")
            yield run, row

    def answer_message(self, key: str, payload: Any, *, allow_auto_reply: bool) -> Answered:
        """Answer message `key` under this process's claim, claiming it first when it waits
        in the queue again (its earlier claim lapsed or was given back meanwhile); used to
        carry out a reply a person approved. `ClaimNotHeld` when it was handled otherwise."""
        row = self.journal.message(key)
        if row is None or row.account not in self._served:
            raise ClaimNotHeld(f"no message {key!r} in the mailboxes this server serves")
        with self.using(row.account):
            run = self._run(row.account)
            if row.state == proj.PENDING:
                run.pipeline.claim_keys([key], self.settings.lease_seconds)
            row = self.journal.message(key)
            assert row is not None  # messages are never deleted
            if row.state == proj.PENDING:
                raise errors.MailboxUnavailable(f"message {key} waits out a retry delay; it is "
                                                "answered when it can be claimed again")
            if row.state != proj.CLAIMED or row.lease_run_id != run.run_id:
                raise ClaimNotHeld(f"message {key} is {row.state}: it was handled otherwise")
            return run.pipeline.answer(row, payload, allow_auto_reply=allow_auto_reply)

    def reply(self, claim_id: str, payload: Any, *, allow_auto_reply: bool = False) -> Answered:
        with self.holding(claim_id) as (run, row):
            return run.pipeline.answer(row, payload, allow_auto_reply=allow_auto_reply)

    def release(self, claim_id: str, *, retry_after_s: float = 0.0,
                reason: str = "released by the handler") -> datetime | None:
        with self.holding(claim_id) as (run, row):
            return run.pipeline.give_back(row, delay=retry_after_s, reason=reason)

    def reject(self, claim_id: str, reason: str) -> None:
        if not reason.strip():
            raise errors.UsageError("reject needs a reason: it is journaled for a person to read")
        with self.holding(claim_id) as (run, row):
            run.pipeline.dead_letter(row, reason=reason)

    def close(self) -> None:
        """Give back every claim still held (the handler is gone: each counts as an
        attempt) and stop this process's runs. After a crash instead, the next run of the
        mailbox releases them (its recovery handles what a dead run held)."""
        self._closed = True
        for served in self._served.values():
            with served.lock:
                run, served.run = served.run, None
                if run is None:
                    continue
                try:
                    for row in self.journal.in_flight(run.address):
                        if row.lease_run_id == run.run_id and row.state == proj.CLAIMED:
                            run.pipeline.give_back(row, delay=0.0, reason="the handler left")
                finally:
                    run.stop()
