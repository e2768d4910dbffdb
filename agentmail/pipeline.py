"""One mailbox's claim → process → send → ack cycle, journaled by the write-ahead rule.

The journal records each decision before its side effect and the outcome after
it: `claimed` before the processing label, `processed` (with every queued
message) before any send, `sent` after each send, `acked` after the labels
change. The pipeline talks to the mailbox port and the journal store only; it
never imports googleapiclient or SQLAlchemy.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from agentmail import errors, handling, intake, lifecycle, records
from agentmail import message as msg
from agentmail.agent import Agent, Outbox
from agentmail.config import Settings
from agentmail.journal import events as ev
from agentmail.journal.port import Claim, JournalPort, MessageRow, OutboxRow
from agentmail.mailbox import base as mb
from agentmail.mailbox.delivery import send_exactly_once
from agentmail.screening import Screen

log = logging.getLogger(__name__)

TRACEBACK_LINES = 12  # of a failing handler, kept in the journal
SYSTEM_UNREAD = "UNREAD"

StepListener = Callable[[str, dict[str, Any]], None]
Outcome = tuple[Any, Outbox] | Exception  # what a handler returned, or raised
Checkpoint = Callable[[str], None]


@dataclass
class CycleReport:
    """What one cycle did; the run prints it and sums it into the run's summary."""

    fetched: int = 0
    rejected: int = 0
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    sent: int = 0
    acked: int = 0
    loop_guarded: int = 0
    duplicates: int = 0
    abandoned: int = 0  # messages another run took over while this one held them
    full_sync: bool = False
    errors: list[str] = field(default_factory=list)

    def add(self, other: CycleReport) -> None:
        self.full_sync = self.full_sync or other.full_sync
        for name in ("fetched", "rejected", "processed", "failed", "dead_lettered", "sent",
                     "acked", "loop_guarded", "duplicates", "abandoned"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {
            "errors": list(self.errors)}


class Pipeline(intake.Intake):
    """Processes one mailbox. `cycle()` is one poll: sync, claim, handle, send, ack."""

    def __init__(self, *, journal: JournalPort, mailbox: mb.Mailbox, agent: Agent,
                 settings: Settings, run_id: str, on_step: StepListener | None = None,
                 checkpoint: Checkpoint | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.journal = journal
        self.mailbox = mailbox
        self.agent = agent
        self.settings = settings
        self.run_id = run_id
        self.address = mailbox.address
        self.screen = Screen(journal, settings, address=self.address, run_id=run_id)
        self.limits = self.screen.limits
        self.on_step = on_step or (lambda kind, info: None)
        self.checkpoint = checkpoint or (lambda name: None)
        self.sleep = sleep
        # Set by Ctrl-C / SIGTERM: the cycle ends after the step under way.
        self.stop_requested = threading.Event()
        # Set by a second Ctrl-C: handlers under way are abandoned at once.
        self.abandon_requested = threading.Event()
        self.handlers: handling.HandlerRunner[Claim] = handling.HandlerRunner(
            concurrency=settings.concurrency, timeout=settings.handler_timeout,
            abandon=self.abandon_requested)
        self.last_progress = time.monotonic()  # the heartbeat beats only while this moves
        self._parsed: dict[str, msg.Message] = {}  # accepted this cycle, not yet handled
        self._cursor: str | None = None  # the history id of the last sync
        self.hold_cursor = False  # set when a fetched message could not be journaled

    @property
    def labels(self) -> list[str]:
        s = self.settings
        return [s.label_processing, s.label_done, s.label_failed, s.label_rejected]

    # --- the cycle -------------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        report = CycleReport()
        self.finish_in_flight(report)
        self.sync(report)
        while not self.stop_requested.is_set() and self.process_batch(report):
            pass
        return report

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def step(self, kind: str, info: dict[str, Any]) -> None:
        self.progressed()
        self.on_step(kind, info)

    # --- claim, handle, send, ack ----------------------------------------------------------

    def process_batch(self, report: CycleReport) -> bool:
        """Claim up to max_messages pending messages and take each through to ack or release."""
        rows = self.journal.claimable(self.address, limit=self.settings.max_messages)
        if not rows:
            return False
        return self.process_rows(rows, report) and len(rows) == self.settings.max_messages

    def process_rows(self, rows: Sequence[MessageRow], report: CycleReport) -> bool:
        """Claim these pending messages and take each one claimed through to ack or release.

        `process_batch` gives it the oldest claimable messages, `agentmail replay` the ones
        it was asked to replay. False when none could be claimed.
        """
        claims = self.journal.claim_many([r.key for r in rows], run_id=self.run_id,
                                         lease_seconds=self.settings.lease_seconds)
        if not claims:
            return False
        self.checkpoint("after_claim_journaled")
        self._label([c.provider_id for c in claims], add=[self.settings.label_processing],
                    report=report)
        self.checkpoint("after_claim")
        done: list[Claim] = []
        try:
            for claim, message, outcome in self._run_handlers(claims, report):
                if self._isolated(claim, message, outcome, report):
                    done.append(claim)
        finally:
            for claim in claims:
                self._parsed.pop(claim.key, None)
        self.ack(done, report)
        return True

    def _isolated(self, claim: Claim, message: msg.Message | None, outcome: Outcome,
                  report: CycleReport) -> bool:
        """`_after_handler` for one message, so that nothing about it can stop the run.

        A lost lease abandons the message (its new owner finishes it); any other error of
        ours, of a library or of the journal about this message fails its attempt like a
        handler error. Only errors about the whole journal (JournalBusy) go up.
        """
        try:
            if message is None:  # it could not even be read back: fail it
                raise outcome if isinstance(outcome, BaseException) else RuntimeError(outcome)
            return self._after_handler(claim, message, outcome, report)
        except errors.LeaseLost as exc:
            self.abandoned(claim, exc, report)
        except (errors.JournalBusy, errors.AuthError, errors.Interrupted):
            raise
        except Exception as exc:  # quarantine this message, go on with the rest
            log.warning("%s: %s failed outside its handler: %s: %s", self.address, claim.key,
                        type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            try:
                self.fail_attempt(claim, exc, report, stage="pipeline")
            except errors.LeaseLost as lost:
                self.abandoned(claim, lost, report)
            except (errors.JournalBusy, errors.AuthError):
                raise
            except Exception as again:  # recovery charges it as a crashed claim
                report.errors.append(f"{claim.key}: {again}")
                log.warning("%s: could not journal the failure of %s (%s); the next run's "
                            "recovery charges it", self.address, claim.key, again)
        return False

    def abandoned(self, claim: Claim, exc: errors.LeaseLost, report: CycleReport) -> None:
        report.abandoned += 1
        log.warning("%s: %s; abandoned %s without sending (its new owner finishes it)",
                    self.address, exc, claim.key)
        self.step("abandoned", {"key": claim.key, "error": exc})

    def _run_handlers(self, claims: Sequence[Claim], report: CycleReport
                      ) -> Iterator[tuple[Claim, msg.Message | None, Outcome]]:
        """Run the handler on each claimed message; yield outcomes as they complete.

        Only handlers run in worker threads (see agentmail.handling): the journal and
        mailbox work after each stays on this thread, so the write-ahead order (processed
        before any send) is the same whatever the concurrency.
        """
        prepared: dict[str, msg.Message] = {}
        batch = []
        for claim in claims:
            try:
                message = self.message_of(claim.key)
            except Exception as exc:  # unreadable: fail it, go on
                yield claim, None, exc
                continue
            prepared[claim.key] = message
            self.step("claimed", {"message": message, "attempt": claim.attempt})
            batch.append((claim, claim.conversation_id or claim.key,
                          _call(self._started, claim, message)))
        for claim, outcome in self.handlers.run(batch):
            self.progressed()
            if isinstance(outcome, handling.Abandoned | handling.NotStarted) \
                    and self.abandon_requested.is_set():
                self._interrupted(claim, isinstance(outcome, handling.Abandoned), report)
                continue
            if isinstance(outcome, handling.NotStarted):
                self.release_unstarted(claim, "conversation_blocked")
                continue
            yield claim, prepared[claim.key], outcome
        if self.abandon_requested.is_set():
            raise errors.Interrupted("abandoned the handlers under way; their messages were "
                                     "released for retry, nothing was sent for them")

    def _interrupted(self, claim: Claim, started: bool, report: CycleReport) -> None:
        """The user abandoned the run: an interrupted attempt, released at once for retry."""
        try:
            if started:
                self.fail_attempt(claim, errors.Interrupted("abandoned by the user"), report,
                                  stage="interrupted", retry=True, delay=0.0)
            else:
                self.release_unstarted(claim, "interrupted_before_handler")
        except errors.LeaseLost as exc:
            self.abandoned(claim, exc, report)

    def _started(self, claim: Claim, message: msg.Message) -> Outcome:
        """On the worker thread: mark the handler started (recovery charges exactly these
        claims after a crash), then run it."""
        try:
            self.journal.mark_started(claim)
        except Exception as exc:  # the journal is away: this attempt fails, nothing ran
            return exc
        outcome = self._invoke(message)
        try:  # it returned: a crash from here on is not this message's doing
            self.journal.mark_started(claim, running=False)
        except Exception as exc:  # the outcome stands; at worst a crash charges it
            log.warning("%s: could not mark %s's handler done: %s", self.address, claim.key, exc)
        return outcome

    def _invoke(self, message: msg.Message) -> Outcome:
        try:
            return self.agent.handle(message, self.address, salt=self._salt(message.key))
        except Exception as exc:  # a handler's failure is journaled, never fatal to the run
            return exc

    def _salt(self, key: str) -> str:
        """Empty for a message's first handled result; a replay's handler gets a new one, so
        its replies never take the Message-IDs (and outbox ids) of an earlier result. A second
        copy of a Message-ID that is not a duplicate (another sender or body) gets its own too."""
        events = self.journal.events_of_message(key)
        earlier = sum(e.kind == ev.PROCESSED for e in events)
        salt = f"replay{earlier}" if earlier else ""
        fetched = next((e for e in events if e.kind == ev.FETCHED), None)
        if fetched is not None and fetched.data.get("repeats"):
            salt += f"|copy:{fetched.data['provider_id']}"
        return salt

    def message_of(self, key: str) -> msg.Message:
        """The message as fetched, parsed again from the raw bytes the journal keeps."""
        if key in self._parsed:
            return self._parsed[key]
        fetched = next(e for e in self.journal.events_of_message(key) if e.kind == ev.FETCHED)
        d = fetched.data
        raw = self.journal.body(key)
        if raw is None:
            raise errors.BodyUnavailable(key)
        return msg.parse(raw, account=self.address, provider_id=d["provider_id"],
                         thread_id=d.get("thread_id"), limits=self.limits)

    def _after_handler(self, claim: Claim, message: msg.Message, outcome: Outcome,
                       report: CycleReport) -> bool:
        """Journal the handler's outcome, then send. True when the message is ready to ack."""
        if isinstance(outcome, BaseException):
            self.fail_attempt(claim, outcome, report)
            return False
        result, outbox = outcome
        outgoing = list(outbox.items)
        try:
            self.screen.check_outgoing(outgoing)
        except errors.OutgoingRejected as exc:  # like one raised by compose in the handler
            self.fail_attempt(claim, exc, report)
            return False
        replies = [o for o in outgoing if o.in_reply_to == message.message_id]
        blockers = self.screen.reply_blockers(claim.conversation_id, message,
                                              outbox.allow_auto_reply) if replies else []
        suppressed = replies if blockers else []
        outgoing = [o for o in outgoing if o not in suppressed]
        journaled = [records.outgoing_data(o) for o in outgoing]
        events = [ev.Event(ev.PROCESSED, self.address, message_key=claim.key, run_id=self.run_id,
                           attempt=claim.attempt, data={
                               "result": records.json_safe(result), "token": claim.token,
                               # Sends happen after this point: recovery scans SENT from here.
                               "history_point": self._cursor,
                               "outgoing": journaled})]
        if suppressed:
            events.append(ev.Event(ev.LOOP_GUARDED, self.address, message_key=claim.key,
                                   run_id=self.run_id, data={
                                       "reason": blockers[0], "blockers": blockers,
                                       "auto_submitted": message.auto_submitted,
                                       "suppressed": [o.message_id for o in suppressed]}))
            report.loop_guarded += 1
            self.step("loop_guarded", {"message": message, "reason": blockers[0]})
        self.journal.append(*events)
        report.processed += 1
        self.step("processed", {"message": message, "outgoing": len(outgoing)})
        self.checkpoint("after_processed")
        return self.send_outbox(claim.key, report, owner=claim, journaled=journaled,
                                history_point=self._cursor)

    def send_outbox(self, key: str, report: CycleReport, *, owner: Claim | None = None,
                    since_history_id: str | None = None,
                    journaled: list[dict[str, Any]] | None = None,
                    history_point: str | None = None) -> bool:
        """Send every queued message of `key` not yet journaled as sent. True when all are out.

        `owner`: the claim the sends happen under; it is renewed (proving it is still ours)
        immediately before each send, so a run that lost it sends nothing. None for error
        replies to rejected mail and for `agentmail send` requests, which no claim holds.
        `journaled`: the outgoing messages just journaled for `key` (saves reading them back);
        `since_history_id`: recovery's point to look for earlier sends before sending;
        `history_point`: a history id known to precede these sends (saves a getProfile).
        """
        unsent = self.journal.unsent_outbox(key) if journaled is None or journaled else []
        by_id = {o["outbox_id"]: o for o in journaled} if journaled else None
        for i, item in enumerate(unsent):
            if i:
                self.checkpoint("between_sends")
            if by_id is None or item.outbox_id not in by_id:  # queued by an earlier result
                by_id = self._outgoing_by_id(key)
            processed = by_id[item.outbox_id]
            if owner is not None:
                owner = self.journal.renew(owner, self.settings.lease_seconds)
            try:
                ref, recovered = send_exactly_once(
                    self.mailbox, records.unb64(item.raw), item.thread_id, item.rfc_message_id,
                    item.outbox_id, since_history_id=since_history_id,
                    history_point=history_point, sleep=self.sleep)
            except errors.MailboxRejected as exc:
                self._send_refused(key, owner, item, exc, report)
                return False
            except errors.MailboxUnavailable as exc:
                # Unknown outcome and the mailbox is unreachable: leave it in flight; the next
                # cycle (or reconciliation) looks for it before sending again.
                report.errors.append(f"send {item.rfc_message_id}: {exc}")
                log.warning("%s: could not send %s yet: %s", self.address, item.rfc_message_id, exc)
                return False
            self.checkpoint("before_sent_journaled")  # out, and the journal does not know yet
            self.journal.append(ev.Event(ev.SENT, self.address, message_key=key,
                                         run_id=self.run_id, data={
                                             "outbox_id": item.outbox_id, "provider_id": ref.id,
                                             "thread_id": ref.thread_id,
                                             "message_id": item.rfc_message_id,
                                             "in_reply_to": processed.get("in_reply_to"),
                                             "references": processed.get("references", []),
                                             "sender": self.address,
                                             "recipients": json.loads(item.recipients),
                                             "subject": item.subject,
                                             "payload": processed.get("payload"),
                                             "recovered": recovered,
                                             **({"token": owner.token} if owner else {})}))
            report.sent += 1
            self.step("sent", {"key": key, "message_id": item.rfc_message_id,
                               "to": json.loads(item.recipients), "recovered": recovered})
        self.checkpoint("after_send")
        return True

    def _outgoing_by_id(self, key: str) -> dict[str, dict[str, Any]]:
        """Every message journaled as outgoing for `key` (by `processed`, by `rejected` for an
        error reply, by `send_requested` for a request), the latest journaling of an id winning."""
        found: dict[str, dict[str, Any]] = {}
        for e in self.journal.events_of_message(key):
            if e.kind in (ev.PROCESSED, ev.REJECTED, ev.SEND_REQUESTED):
                found.update({o["outbox_id"]: o for o in e.data.get("outgoing", [])})
        return found

    def _send_refused(self, key: str, owner: Claim | None, item: OutboxRow,
                      exc: errors.MailboxRejected, report: CycleReport) -> None:
        """The provider will never accept this message: dead-letter its source for a person."""
        if owner is None:  # an error reply or a request: give it up, nothing else to undo
            self.journal.append(ev.Event(ev.FAILED, self.address, message_key=key,
                                         run_id=self.run_id, data={
                                             "stage": "error_reply",
                                             "error_class": type(exc).__name__,
                                             "error": str(exc), "retryable": False,
                                             "outbox_id": item.outbox_id}))
            report.errors.append(f"{item.rfc_message_id} refused: {exc}")
            return
        self.fail_attempt(owner, exc, report, stage="send", retry=False, reason="send_refused",
                          outbox_id=item.outbox_id)

    def ack(self, claims: Iterable[Claim], report: CycleReport) -> None:
        """Mark handled messages read and done in the mailbox, then journal `acked`."""
        claims = list(claims)
        if not claims:
            return
        s = self.settings
        self._label([c.provider_id for c in claims], add=[s.label_done],
                    remove=[SYSTEM_UNREAD, s.label_processing], report=report, required=True)
        self.checkpoint("after_ack_labels")
        events = [ev.Event(ev.ACKED, self.address, message_key=c.key, run_id=self.run_id,
                           data={"token": c.token}) for c in claims]
        try:
            self.journal.append(*events)
            acked = claims
        except errors.LeaseLost:  # one of them was taken over: ack the others one by one
            acked = []
            for claim, event in zip(claims, events, strict=True):
                try:
                    self.journal.append(event)
                    acked.append(claim)
                except errors.LeaseLost as exc:
                    self.abandoned(claim, exc, report)
        report.acked += len(acked)
        for c in acked:
            self.step("acked", {"key": c.key})

    def fail_attempt(self, claim: Claim, exc: BaseException, report: CycleReport, *,
                     stage: str = "handler", retry: bool | None = None,
                     reason: str | None = None, delay: float | None = None,
                     **details: Any) -> None:
        """The one way an attempt fails: `failed`, then the labels, then `released` for a retry
        after backoff or `dead_lettered` -- for the pipeline, recovery and replay alike.

        `retry`: None decides by the attempt budget (and never retries unsafe outgoing mail,
        which fails the same way every time); `delay`: seconds before the retry (None: backoff).
        """
        s = self.settings
        refused = isinstance(exc, errors.OutgoingRejected)
        if retry is None:
            retry = claim.attempt < s.max_attempts and not refused
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self.journal.append(ev.Event(ev.FAILED, self.address, message_key=claim.key,
                                     run_id=self.run_id, attempt=claim.attempt, data={
                                         "stage": stage, "error_class": type(exc).__name__,
                                         "error": str(exc)[:2000], "retryable": retry,
                                         "token": claim.token,
                                         **({"reason": reason} if reason else {}), **details,
                                         **({"traceback": "".join(tb[-TRACEBACK_LINES:])}
                                            if exc.__traceback__ else {})}))
        report.failed += 1
        if retry:
            self._label([claim.provider_id], remove=[s.label_processing], report=report)
            if delay is None:
                delay = min(s.backoff_max, s.backoff_base * 2 ** (claim.attempt - 1))
                delay *= random.uniform(0.8, 1.2)  # jitter, so failures do not retry in lockstep
            at = self.journal.clock() + timedelta(seconds=delay)
            self.journal.append(ev.Event(ev.RELEASED, self.address, message_key=claim.key,
                                         run_id=self.run_id, attempt=claim.attempt,
                                         data={"next_attempt_at": at.isoformat(),
                                               "reason": reason or f"{stage}_failed",
                                               "token": claim.token}))
            self.step("released", {"key": claim.key, "error": exc, "retry_at": at})
        else:
            self._label([claim.provider_id], add=[s.label_failed], remove=[s.label_processing],
                        report=report)
            self.journal.append(ev.Event(ev.DEAD_LETTERED, self.address, message_key=claim.key,
                                         run_id=self.run_id, attempt=claim.attempt, data={
                                             "reason": reason or ("outgoing_rejected" if refused
                                                                  else "max_attempts"),
                                             "token": claim.token}))
            report.dead_lettered += 1
            self.step("dead_lettered", {"key": claim.key, "error": exc})

    def release_unstarted(self, claim: Claim, reason: str, **data: Any) -> None:
        """Give back a claim whose handler never started, and the attempt it counted."""
        self.journal.append(ev.Event(ev.RELEASED, self.address, message_key=claim.key,
                                     run_id=self.run_id, attempt=claim.attempt,
                                     data={"next_attempt_at": None, "reason": reason,
                                           "refund_attempt": True, "token": claim.token,
                                           **data}))
        self._label([claim.provider_id], remove=[self.settings.label_processing],
                    report=CycleReport())

    def _label(self, ids: Sequence[str], *, add: Sequence[str] = (), remove: Sequence[str] = (),
               report: CycleReport, required: bool = False) -> None:
        """Mirror a journal state in Gmail labels. Only acks must succeed; the rest is a mirror
        that reconciliation repairs."""
        try:
            self.mailbox.modify(ids, add=add, remove=remove)
        except errors.MailboxError as exc:
            if required:
                raise
            report.errors.append(f"labels on {len(ids)} message(s): {exc}")
            log.warning("%s: label change failed (%s); reconciliation will repair it",
                        self.address, exc)

    label = _label  # recovery and replay mirror their decisions through the same path

    # --- in-flight work of this run --------------------------------------------------------

    def history_point_of(self, key: str) -> str | None:
        """The mailbox history point journaled with `key`'s handler result, before any send."""
        for e in reversed(self.journal.events_of_message(key)):
            if e.kind in (ev.PROCESSED, ev.SEND_REQUESTED):
                return e.data.get("history_point")
        return None

    def finish_in_flight(self, report: CycleReport) -> None:
        """Complete messages this run processed but could not send or ack in an earlier cycle,
        and error replies to rejected mail that could not be sent yet (by any run)."""
        for key in self.journal.rejected_with_queued_outbox(self.address):
            point = next((e.data.get("history_point") for e in self.journal.events_of_message(key)
                          if e.kind == ev.REJECTED and e.data.get("outgoing")), None)
            self.send_outbox(key, report, since_history_id=point)
        for key in self.journal.queued_requests(self.address):  # `agentmail send` cut short
            self.send_outbox(key, report, since_history_id=self.history_point_of(key) or "0")
        held = [claim_of(r) for r in self.journal.in_flight(self.address)
                if r.lease_run_id == self.run_id and r.state == lifecycle.PROCESSED]
        done = []
        for claim in held:
            try:
                # A send that failed earlier may still have gone out: look before sending again.
                if self.send_outbox(claim.key, report, owner=claim,
                                    since_history_id=self.history_point_of(claim.key) or "0"):
                    done.append(claim)
            except errors.LeaseLost as exc:
                self.abandoned(claim, exc, report)
        self.ack(done, report)


def claim_of(row: MessageRow) -> Claim:
    """The claim a message row records (its holder, token and deadline)."""
    assert row.lease_run_id is not None and row.lease_expires_at is not None
    return Claim(row.key, row.account, row.provider_id, row.conversation_id, row.attempts,
                 row.lease_token, row.lease_run_id, row.lease_expires_at)


def _call(fn: Callable[[Claim, msg.Message], Outcome], claim: Claim,
          message: msg.Message) -> Callable[[], Outcome]:
    return lambda: fn(claim, message)
