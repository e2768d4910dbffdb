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
import queue
import random
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agentmail import errors, policy, records
from agentmail import message as msg
from agentmail.agent import Agent, Outbox
from agentmail.config import Settings
from agentmail.journal import events as ev
from agentmail.journal.store import Journal
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
    full_sync: bool = False
    errors: list[str] = field(default_factory=list)

    def add(self, other: CycleReport) -> None:
        for name in ("fetched", "rejected", "processed", "failed", "dead_lettered", "sent",
                     "acked", "loop_guarded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {
            "errors": list(self.errors)}


class Pipeline:
    """Processes one mailbox. `cycle()` is one poll: sync, claim, handle, send, ack."""

    def __init__(self, *, journal: Journal, mailbox: mb.Mailbox, agent: Agent,
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
        self._executor: ThreadPoolExecutor | None = None
        # Set by Ctrl-C / SIGTERM: the cycle ends after the step under way.
        self.stop_requested = threading.Event()
        self._parsed: dict[str, msg.Message] = {}  # accepted this cycle, not yet handled
        self._cursor: str | None = None  # the history id of the last sync

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

    def lease_until(self) -> datetime:
        return self.journal.clock() + timedelta(seconds=self.settings.lease_seconds)

    # --- fetch -----------------------------------------------------------------------------

    def sync(self, report: CycleReport) -> None:
        """Bring new mail into the journal: incremental from the cursor, else a full sync."""
        account = self.journal.account(self.address)
        cursor = self._cursor = account.history_id if account is not None else None
        try:
            changes = self.mailbox.changes_since(cursor) if cursor else None
        except errors.HistoryExpired:
            log.warning("%s: history cursor %s expired; doing a full sync", self.address, cursor)
            changes = None
        if changes is None:
            report.full_sync = True
            changes = self.mailbox.list_unread(self.settings.max_messages * 100)
        if self._cursor is None:  # first sync: its point was taken before listing
            self._cursor = changes.history_id
        ids = list(dict.fromkeys(ref.id for ref in changes.added))
        known = self.journal.known_provider_ids(self.address, ids)
        new = [i for i in ids if i not in known]
        chunk = max(1, self.settings.max_messages)
        for start in range(0, len(new), chunk):
            if self.stop_requested.is_set():
                return  # the cursor stays: what was not fetched is listed again next run
            self._fetch(new[start:start + chunk], report)
            # Handle each chunk before fetching the next: a backlog of any size is worked
            # through with one chunk of messages in memory.
            while not self.stop_requested.is_set() and self.process_batch(report):
                pass
        if not account or account.history_id != changes.history_id:
            self.journal.append(ev.Event(ev.SYNCED, self.address, run_id=self.run_id,
                                         data={"history_id": changes.history_id,
                                               "full": report.full_sync}))

    def _fetch(self, ids: Sequence[str], report: CycleReport) -> None:
        raws = self.mailbox.get_raw(ids)
        events: list[ev.Event] = []
        rejected: list[str] = []
        answered: list[str] = []
        for raw in raws:
            message = msg.parse(raw.raw, account=self.address, provider_id=raw.id,
                                thread_id=raw.thread_id, limits=self.limits)
            key = message.key
            events.append(ev.Event(ev.FETCHED, self.address, message_key=key, run_id=self.run_id,
                                   data=records.fetched_data(message, raw)))
            verdict = policy.evaluate(message, self.screen.policy)
            self.on_step("fetched", {"message": message})
            if verdict.accepted:
                self._parsed[key] = message
            else:
                rejection = self.screen.rejection(message, verdict, raw.raw)
                events.extend(rejection)
                if rejection[0].data.get("outgoing"):
                    answered.append(key)
                rejected.append(raw.id)
                report.rejected += 1
                self.on_step("rejected", {"message": message, "reason": verdict.reason})
        if events:
            self.journal.append(*events)
        report.fetched += len(raws)
        if rejected:
            self._label(rejected, add=[self.settings.label_rejected], report=report)
        for key in answered:
            self.send_outbox(key, report)

    # --- claim, handle, send, ack ----------------------------------------------------------

    def process_batch(self, report: CycleReport) -> bool:
        """Claim up to max_messages pending messages and take each through to ack or release."""
        rows = self.journal.claimable(self.address, limit=self.settings.max_messages)
        if not rows:
            return False
        return self.process_rows(rows, report) and len(rows) == self.settings.max_messages

    def process_rows(self, rows: Sequence[Any], report: CycleReport) -> bool:
        """Claim these pending messages and take each one claimed through to ack or release.

        `process_batch` gives it the oldest claimable messages, `agentmail replay` the ones
        it was asked to replay. False when none could be claimed.
        """
        taken = {e.message_key for e in self.journal.claim_many(
            [r.key for r in rows], run_id=self.run_id, lease_until=self.lease_until())}
        claimed = [r for r in rows if r.key in taken]
        if not claimed:
            return False
        self.checkpoint("after_claim_journaled")
        self._label([r.provider_id for r in claimed], add=[self.settings.label_processing],
                    report=report)
        self.checkpoint("after_claim")
        done: list[Any] = []
        for row, message, outcome in self._run_handlers(claimed):
            if self._after_handler(row, message, outcome, report):
                done.append(row)
        self.ack(done, report)
        for row in claimed:
            self._parsed.pop(row.key, None)
        return True

    def _run_handlers(self, rows: Sequence[Any]) -> Iterator[tuple[Any, msg.Message, Outcome]]:
        """Run the handler on each message; yield outcomes as they complete.

        With concurrency N, conversations are handled in parallel, each conversation's
        messages one after another in arrival order. Only handlers run in worker
        threads: the journal and mailbox work after each stays on this thread, so the
        write-ahead order (processed before any send) is the same as with one worker.
        """
        prepared = [(row, self.message_of(row.key)) for row in rows]
        for row, message in prepared:
            self.on_step("claimed", {"message": message, "attempt": row.attempts + 1})
        if self.settings.concurrency <= 1 or len(prepared) <= 1:
            for row, message in prepared:
                yield row, message, self._invoke(message)
            return
        by_conversation: dict[str, list[tuple[Any, msg.Message]]] = {}
        for row, message in prepared:
            by_conversation.setdefault(row.conversation_id or row.key, []).append((row, message))
        finished: queue.Queue[tuple[Any, msg.Message, Outcome]] = queue.Queue()

        def work(items: list[tuple[Any, msg.Message]]) -> None:
            for row, message in items:
                finished.put((row, message, self._invoke(message)))

        pool = self._pool()
        for items in by_conversation.values():
            pool.submit(work, items)
        for _ in prepared:
            yield finished.get()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.concurrency,
                                                thread_name_prefix="handler")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _invoke(self, message: msg.Message) -> Outcome:
        try:
            return self.agent.handle(message, self.address, salt=self._salt(message.key))
        except Exception as exc:  # a handler's failure is journaled, never fatal to the run
            return exc

    def _salt(self, key: str) -> str:
        """Empty for a message's first handled result; a replay's handler gets a new one, so
        its replies never take the Message-IDs (and outbox ids) of an earlier result."""
        earlier = sum(e.kind == ev.PROCESSED for e in self.journal.events_of_message(key))
        return f"replay{earlier}" if earlier else ""

    def message_of(self, key: str) -> msg.Message:
        """The message as fetched, parsed again from the raw bytes the journal keeps."""
        if key in self._parsed:
            return self._parsed[key]
        fetched = next(e for e in self.journal.events_of_message(key) if e.kind == ev.FETCHED)
        d = fetched.data
        return msg.parse(records.unb64(d["raw"]), account=self.address, provider_id=d["provider_id"],
                         thread_id=d.get("thread_id"), limits=self.limits)

    def _after_handler(self, row: Any, message: msg.Message, outcome: Outcome,
                       report: CycleReport) -> bool:
        """Journal the handler's outcome, then send. True when the message is ready to ack."""
        if isinstance(outcome, BaseException):
            self._fail(row, message, outcome, report)
            return False
        result, outbox = outcome
        outgoing = list(outbox.items)
        try:
            self.screen.check_outgoing(outgoing)
        except errors.OutgoingRejected as exc:  # like one raised by compose in the handler
            self._fail(row, message, exc, report)
            return False
        replies = [o for o in outgoing if o.in_reply_to == message.message_id]
        blockers = self.screen.reply_blockers(row.conversation_id, message, outbox.allow_auto_reply) \
            if replies else []
        suppressed = replies if blockers else []
        outgoing = [o for o in outgoing if o not in suppressed]
        journaled = [records.outgoing_data(o) for o in outgoing]
        events = [ev.Event(ev.PROCESSED, self.address, message_key=row.key, run_id=self.run_id,
                           attempt=row.attempts + 1, data={
                               "result": records.json_safe(result),
                               # Sends happen after this point: recovery scans SENT from here.
                               "history_point": self._cursor,
                               "outgoing": journaled})]
        if suppressed:
            events.append(ev.Event(ev.LOOP_GUARDED, self.address, message_key=row.key,
                                   run_id=self.run_id, data={
                                       "reason": blockers[0], "blockers": blockers,
                                       "auto_submitted": message.auto_submitted,
                                       "suppressed": [o.message_id for o in suppressed]}))
            report.loop_guarded += 1
            self.on_step("loop_guarded", {"message": message, "reason": blockers[0]})
        self.journal.append(*events)
        report.processed += 1
        self.on_step("processed", {"message": message, "outgoing": len(outgoing)})
        self.checkpoint("after_processed")
        return self.send_outbox(row.key, report, journaled=journaled, history_point=self._cursor)

    def send_outbox(self, key: str, report: CycleReport, *,
                    since_history_id: str | None = None,
                    journaled: list[dict[str, Any]] | None = None,
                    history_point: str | None = None) -> bool:
        """Send every queued message of `key` not yet journaled as sent. True when all are out.

        `journaled`: the outgoing messages just journaled for `key` (saves reading them back);
        `since_history_id`: recovery's point to look for earlier sends before sending;
        `history_point`: a history id known to precede these sends (saves a getProfile).
        """
        unsent = self.journal.unsent_outbox(key) if journaled is None or journaled else []
        by_id = {o["outbox_id"]: o for o in journaled} if journaled else None
        for i, item in enumerate(unsent):
            if i:
                self.checkpoint("between_sends")
            if by_id is None:
                by_id = self._outgoing_by_id(key)
            processed = by_id[item.outbox_id]
            try:
                ref, recovered = send_exactly_once(
                    self.mailbox, records.unb64(item.raw), item.thread_id, item.rfc_message_id,
                    item.outbox_id, since_history_id=since_history_id,
                    history_point=history_point, sleep=self.sleep)
            except errors.MailboxRejected as exc:
                self._send_refused(key, item, exc, report)
                return False
            except errors.MailboxUnavailable as exc:
                # Unknown outcome and the mailbox is unreachable: leave it in flight; the next
                # cycle (or reconciliation) looks for it before sending again.
                report.errors.append(f"send {item.rfc_message_id}: {exc}")
                log.warning("%s: could not send %s yet: %s", self.address, item.rfc_message_id, exc)
                return False
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
                                             "recovered": recovered}))
            report.sent += 1
            self.on_step("sent", {"key": key, "message_id": item.rfc_message_id,
                                  "to": json.loads(item.recipients), "recovered": recovered})
        self.checkpoint("after_send")
        return True

    def _outgoing_by_id(self, key: str) -> dict[str, dict[str, Any]]:
        """Every message journaled as outgoing for `key` (by `processed`, or by `rejected`
        for an error reply), the latest journaling of an outbox id winning."""
        found: dict[str, dict[str, Any]] = {}
        for e in self.journal.events_of_message(key):
            if e.kind in (ev.PROCESSED, ev.REJECTED):
                found.update({o["outbox_id"]: o for o in e.data.get("outgoing", [])})
        return found

    def _send_refused(self, key: str, item: Any, exc: errors.MailboxRejected,
                      report: CycleReport) -> None:
        """The provider will never accept this message: dead-letter its source for a person."""
        row = self.journal.message(key)
        assert row is not None  # its outbox was queued by journaling how it was handled
        if row.state == "rejected":  # an error reply: give it up, the rejection stands
            self.journal.append(ev.Event(ev.FAILED, self.address, message_key=key,
                                         run_id=self.run_id, data={
                                             "stage": "error_reply",
                                             "error_class": type(exc).__name__,
                                             "error": str(exc), "retryable": False,
                                             "outbox_id": item.outbox_id}))
            report.errors.append(f"error reply {item.rfc_message_id} refused: {exc}")
            return
        self.journal.append(ev.Event(ev.FAILED, self.address, message_key=key, run_id=self.run_id,
                                     attempt=row.attempts, data={
                                         "stage": "send", "error_class": type(exc).__name__,
                                         "error": str(exc), "retryable": False,
                                         "outbox_id": item.outbox_id}))
        self._label([row.provider_id], add=[self.settings.label_failed],
                    remove=[self.settings.label_processing], report=report)
        self.journal.append(ev.Event(ev.DEAD_LETTERED, self.address, message_key=key,
                                     run_id=self.run_id, data={"reason": "send_refused"}))
        report.dead_lettered += 1

    def ack(self, rows: Iterable[Any], report: CycleReport) -> None:
        """Mark handled messages read and done in the mailbox, then journal `acked`."""
        rows = list(rows)
        if not rows:
            return
        s = self.settings
        self._label([r.provider_id for r in rows], add=[s.label_done],
                    remove=[SYSTEM_UNREAD, s.label_processing], report=report, required=True)
        self.checkpoint("after_ack_labels")
        self.journal.append(*[ev.Event(ev.ACKED, self.address, message_key=r.key,
                                       run_id=self.run_id) for r in rows])
        report.acked += len(rows)
        for r in rows:
            self.on_step("acked", {"key": r.key})

    def _fail(self, row: Any, message: msg.Message, exc: BaseException,
              report: CycleReport) -> None:
        attempt = row.attempts + 1
        # Unsafe outgoing mail (header injection, recipients) fails the same way every time.
        refused = isinstance(exc, errors.OutgoingRejected)
        retry = attempt < self.settings.max_attempts and not refused
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self.journal.append(ev.Event(ev.FAILED, self.address, message_key=row.key,
                                     run_id=self.run_id, attempt=attempt, data={
                                         "stage": "handler", "error_class": type(exc).__name__,
                                         "error": str(exc)[:2000], "retryable": retry,
                                         "traceback": "".join(tb[-TRACEBACK_LINES:])}))
        report.failed += 1
        s = self.settings
        if retry:
            self._label([row.provider_id], remove=[s.label_processing], report=report)
            delay = min(s.backoff_max, s.backoff_base * 2 ** (attempt - 1))
            delay *= random.uniform(0.8, 1.2)  # jitter, so failures do not retry in lockstep
            at = self.journal.clock() + timedelta(seconds=delay)
            self.journal.append(ev.Event(ev.RELEASED, self.address, message_key=row.key,
                                         run_id=self.run_id, attempt=attempt,
                                         data={"next_attempt_at": at.isoformat(),
                                               "reason": "handler_failed"}))
            self.on_step("released", {"message": message, "error": exc, "retry_at": at})
        else:
            self._label([row.provider_id], add=[s.label_failed], remove=[s.label_processing],
                        report=report)
            self.journal.append(ev.Event(ev.DEAD_LETTERED, self.address, message_key=row.key,
                                         run_id=self.run_id, attempt=attempt,
                                         data={"reason": "outgoing_rejected" if refused
                                               else "max_attempts"}))
            report.dead_lettered += 1
            self.on_step("dead_lettered", {"message": message, "error": exc})

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

    # --- in-flight work of this run --------------------------------------------------------

    def history_point_of(self, key: str) -> str | None:
        """The mailbox history point journaled with `key`'s handler result, before any send."""
        for e in reversed(self.journal.events_of_message(key)):
            if e.kind == ev.PROCESSED:
                return e.data.get("history_point")
        return None

    def finish_in_flight(self, report: CycleReport) -> None:
        """Complete messages this run processed but could not send or ack in an earlier cycle,
        and error replies to rejected mail that could not be sent yet (by any run)."""
        for key in self.journal.rejected_with_queued_outbox(self.address):
            point = next((e.data.get("history_point") for e in self.journal.events_of_message(key)
                          if e.kind == ev.REJECTED and e.data.get("outgoing")), None)
            self.send_outbox(key, report, since_history_id=point)
        rows = [r for r in self.journal.in_flight(self.address) if r.lease_run_id == self.run_id]
        # A send that failed earlier may still have gone out: look before sending again.
        done = [r for r in rows if r.state == "processed" and self.send_outbox(
            r.key, report, since_history_id=self.history_point_of(r.key) or "0")]
        self.ack(done, report)
