"""Recovery: finish or undo what a dead run left in flight, journaling every decision.

Runs at the start of every run, and during a run whenever in-flight work appears whose
holder is gone (its run stopped, its process died or its lease lapsed).

| last step journaled        | action                                                      |
|----------------------------|-------------------------------------------------------------|
| claimed                    | failed (reason crashed), release or dead-letter per policy  |
| processed, some not sent   | for each unsent: look in the mailbox first, send if absent  |
| all sent, not acked        | ack                                                         |
| processing label in Gmail  | remove it when no live lease holds the message              |

Handlers therefore run at least once and their replies go out exactly once. Each decision
is a `reconciled` event written before the repair; a message whose repair needs the mailbox
and cannot get it now stays in flight under this run, which finishes it in a later cycle.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentmail import errors
from agentmail.journal import events as ev
from agentmail.journal import projections as proj
from agentmail.journal.engine import as_utc
from agentmail.journal.port import Claim, MessageRow
from agentmail.pipeline import CycleReport, Pipeline

log = logging.getLogger(__name__)

DRIFT_SCAN_LIMIT = 500  # processing labels looked at per reconciliation

# What `describe()` prints for each counted action, in this order.
ACTIONS = {
    "crashed_claims_released": "crashed claim(s) released for retry",
    "crashed_claims_dead_lettered": "crashed claim(s) dead-lettered",
    "replies_found_sent": "reply(ies) found already sent",
    "replies_sent": "reply(ies) sent",
    "acked": "message(s) acked",
    "dead_lettered": "message(s) dead-lettered (send refused)",
    "postponed": "repair(s) postponed (mailbox unavailable)",
    "labels_removed": "stray processing label(s) removed",
}


@dataclass
class ReconcileReport:
    """What recovery found and did, by action (the keys of `ACTIONS`)."""

    actions: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.actions.values())

    def describe(self) -> str:
        if not self.total:
            return "nothing to repair"
        known = [a for a in ACTIONS if self.actions.get(a)]
        other = sorted(a for a in self.actions if a not in ACTIONS and self.actions[a])
        return ", ".join([f"{self.actions[a]} {ACTIONS[a]}" for a in known] +
                         [f"{self.actions[a]} {a.replace('_', ' ')}" for a in other])

    def as_dict(self) -> dict[str, int]:
        return {a: n for a, n in self.actions.items() if n}


def _reconciled(p: Pipeline, key: str | None, found: str, action: str,
                **extra: Any) -> ev.Event:
    return ev.Event(ev.RECONCILED, p.address, message_key=key, run_id=p.run_id,
                    data={"found": found, "action": action, **extra})


def reconcile(p: Pipeline, *, is_alive: Callable[[Any], bool],
              live_runs: Callable[[str], Any]) -> ReconcileReport:
    """Repair every in-flight message of `p`'s mailbox whose holder is gone.

    Each repair starts by taking the claim over (a compare-and-set on its token): if
    another run got there first, or the holder was alive after all and moved on, the
    message is left to whoever owns it.
    """
    report = ReconcileReport()
    orphans = [row for row in p.journal.in_flight(p.address)
               if row.lease_run_id != p.run_id and not _held(p, row, is_alive, live_runs)]
    claimed = [row for row in orphans if row.state == proj.CLAIMED]
    started = _maybe_started(p, claimed)
    for row in orphans:
        try:
            if row.state == proj.CLAIMED:
                _crashed_claim(p, row, report, handler_started=row.key in started)
            elif row.state == proj.PROCESSED:
                _finish_processed(p, row, report)
        except errors.LeaseLost:
            report.actions["taken_by_another_run"] += 1
            log.info("%s: %s was taken over by another run first", p.address, row.key)
    _release_drift(p, report)
    return report


def _held(p: Pipeline, row: MessageRow, is_alive: Callable[[Any], bool],
          live_runs: Callable[[str], Any]) -> bool:
    """Does a live run still hold this message under an unexpired lease (its own deadline,
    on the database's clock)?"""
    holder = live_runs(row.lease_run_id) if row.lease_run_id else None
    if holder is None or not is_alive(holder):
        return False
    expires = as_utc(row.lease_expires_at)
    return expires is None or expires > p.journal.clock()


def _maybe_started(p: Pipeline, claimed: list[MessageRow]) -> set[str]:
    """The crashed claims whose handler may have started.

    A run marks each claim while its handler runs (`handler_started_at`, cleared when it
    returns): those, exactly, were inside a handler when the run died and are charged an
    attempt; a message that kills the process is so dead-lettered after max_attempts, and
    the messages around it are never charged for its crashes. Runs of older versions left no marks; for them:
    a run claims a batch and hands its conversations to N workers in claim order, each
    conversation's messages one after another. So of a dead run's unfinished claims, only
    the first unfinished message of each of its first N unfinished conversations can have
    been inside a handler; the rest never reached one and are released without spending
    an attempt (else a batch interrupted again and again would dead-letter messages no
    handler ever saw). N is the dead run's `concurrency`, as its `run_started` recorded it.
    """
    marked = {r.lease_run_id for r in claimed if r.lease_run_id and p.journal.run_marks_handlers(
        r.lease_run_id)}
    started = {r.key for r in claimed if r.lease_run_id in marked and r.handler_started_at}
    claimed = [r for r in claimed if r.lease_run_id not in marked]
    by_run: dict[str | None, dict[str, Any]] = {}
    workers: dict[str | None, int] = {}
    for row in sorted(claimed, key=lambda r: r.last_seq):  # last_seq: the claim event
        run_id = row.lease_run_id
        if run_id not in workers:
            workers[run_id] = max(1, (p.journal.run_concurrency(run_id) if run_id else None)
                                  or p.settings.concurrency)
        conversations = by_run.setdefault(run_id, {})
        conversation = row.conversation_id or row.key
        if conversation not in conversations and len(conversations) < workers[run_id]:
            conversations[conversation] = row
            started.add(row.key)
    return started


def _take_over(p: Pipeline, row: MessageRow, action: str, **data: Any) -> Claim:
    return p.journal.take_over(row, run_id=p.run_id, lease_seconds=p.settings.lease_seconds,
                               found=row.state, action=action, dead_run=row.lease_run_id,
                               **data)


def _crashed_claim(p: Pipeline, row: MessageRow, report: ReconcileReport, *,
                   handler_started: bool) -> None:
    """The handler may have run partly: count a crashed attempt and release per policy."""
    if not handler_started:
        claim = _take_over(p, row, "released_unstarted_claim", attempt=row.attempts,
                           handler_started=False)
        p.release_unstarted(claim, "crashed_before_handler")
        report.actions["crashed_claims_released"] += 1
        return
    retry = row.attempts < p.settings.max_attempts
    claim = _take_over(p, row, "released_crashed_claim" if retry else
                       "dead_lettered_crashed_claim", attempt=row.attempts,
                       handler_started=True)
    crash = errors.AgentmailError(f"run {row.lease_run_id} stopped while handling it")
    p.fail_attempt(claim, crash, CycleReport(), retry=retry, delay=0.0, reason="crashed",
                   error_class="Crashed")
    report.actions["crashed_claims_released" if retry else "crashed_claims_dead_lettered"] += 1


def _finish_processed(p: Pipeline, row: MessageRow, report: ReconcileReport) -> None:
    """The handler finished: send what is not known to be sent (looking first), then ack."""
    unsent = p.journal.unsent_outbox(row.key)
    # Taking the claim over makes the pipeline's own send and ack paths run under this run,
    # and a later cycle of this run finishes the job if the mailbox fails us now.
    claim = _take_over(p, row, "complete_sends_then_ack" if unsent else "ack",
                       unsent=[o.rfc_message_id for o in unsent])
    decision_seq = max((e.seq or 0) for e in p.journal.events_of_message(row.key))
    cycle = CycleReport()
    point = p.history_point_of(row.key)
    complete = p.send_outbox(row.key, cycle, owner=claim, since_history_id=point or "0")
    sends = [e for e in p.journal.events_of_message(row.key)
             if e.kind == ev.SENT and (e.seq or 0) > decision_seq]
    found = [e.data["message_id"] for e in sends if e.data.get("recovered")]
    sent = [e.data["message_id"] for e in sends if not e.data.get("recovered")]
    report.actions["replies_found_sent"] += len(found)
    report.actions["replies_sent"] += len(sent)
    current = p.journal.message(row.key)
    assert current is not None  # messages are never removed from the journal
    state = current.state
    acked = False
    if complete:
        try:
            p.ack([claim], cycle)
            acked = True
        except errors.MailboxError as exc:
            cycle.errors.append(f"ack: {exc}")
    if acked:
        report.actions["acked"] += 1
    elif state == proj.DEAD_LETTERED:
        report.actions["dead_lettered"] += 1
    else:
        report.actions["postponed"] += 1
        log.warning("%s: could not finish %s yet (%s); this run retries it",
                    p.address, row.key, "; ".join(cycle.errors) or "mailbox unavailable")
    p.journal.append(_reconciled(
        p, row.key, "processed", "completed" if acked else
        ("dead_lettered" if state == proj.DEAD_LETTERED else "postponed"),
        found_already_sent=found, sent=sent, acked=acked, errors=cycle.errors[:5]))


def _release_drift(p: Pipeline, report: ReconcileReport) -> None:
    """Processing labels in the mailbox that no in-flight claim explains."""
    try:
        labelled = p.mailbox.list_labelled(p.settings.label_processing, DRIFT_SCAN_LIMIT)
    except errors.MailboxError as exc:
        log.warning("%s: could not scan for stray processing labels: %s", p.address, exc)
        return
    # Read after the listing: a claim journaled in between is seen here, so its label stays.
    held = {r.provider_id for r in p.journal.in_flight(p.address)}
    stray = [ref.id for ref in labelled if ref.id not in held]
    if not stray:
        return
    p.journal.append(_reconciled(p, None, "processing_label_without_claim", "label_removed",
                                 provider_ids=stray))
    p.label(stray, remove=[p.settings.label_processing], report=CycleReport())
    report.actions["labels_removed"] += len(stray)
