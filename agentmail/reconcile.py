"""Startup recovery: finish or undo what a dead run left in flight, journaling every decision.

| last step journaled        | action                                                      |
|----------------------------|-------------------------------------------------------------|
| claimed                    | failed (reason crashed), release or dead-letter per policy  |
| processed, some not sent   | for each unsent: look in the mailbox first, send if absent  |
| all sent, not acked        | ack                                                         |
| processing label in Gmail  | remove it when no live lease holds the message              |

Handlers therefore run at least once and their replies go out exactly once.
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
from agentmail.pipeline import CycleReport, Pipeline

log = logging.getLogger(__name__)

DRIFT_SCAN_LIMIT = 500  # processing labels looked at per start


@dataclass
class ReconcileReport:
    """What recovery found and did, by action."""

    actions: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.actions.values())

    def describe(self) -> str:
        if not self.total:
            return "nothing to repair"
        return ", ".join(f"{n} {action.replace('_', ' ')}" for action, n in
                         sorted(self.actions.items()))


def _reconciled(p: Pipeline, key: str | None, found: str, action: str,
                **extra: Any) -> ev.Event:
    return ev.Event(ev.RECONCILED, p.address, message_key=key, run_id=p.run_id,
                    data={"found": found, "action": action, **extra})


def reconcile(p: Pipeline, *, is_alive: Callable[[Any], bool],
              live_runs: Callable[[str], Any]) -> ReconcileReport:
    """Repair every in-flight message of `p`'s mailbox whose run is gone."""
    report = ReconcileReport()
    cycle = CycleReport()
    for row in p.journal.in_flight(p.address):
        if row.lease_run_id == p.run_id:
            continue
        holder = live_runs(row.lease_run_id) if row.lease_run_id else None
        if holder is not None and is_alive(holder):
            continue  # a live run (another worker) still holds it
        if row.state == proj.CLAIMED:
            _crashed_claim(p, row, report, cycle)
        elif row.state == proj.PROCESSED:
            _finish_processed(p, row, report, cycle)
    _release_drift(p, report)
    return report


def _crashed_claim(p: Pipeline, row: Any, report: ReconcileReport, cycle: CycleReport) -> None:
    """The handler may have run partly: count a crashed attempt and release per policy."""
    p.journal.append(_reconciled(p, row.key, "claimed", "released_crashed_claim",
                                 attempt=row.attempts, dead_run=row.lease_run_id))
    retry = row.attempts < p.settings.max_attempts
    p.journal.append(ev.Event(ev.FAILED, p.address, message_key=row.key, run_id=p.run_id,
                              attempt=row.attempts, data={
                                  "stage": "handler", "error_class": "Crashed",
                                  "error": f"run {row.lease_run_id} stopped while handling it",
                                  "reason": "crashed", "retryable": retry}))
    s = p.settings
    if retry:
        p._label([row.provider_id], remove=[s.label_processing], report=cycle)
        p.journal.append(ev.Event(ev.RELEASED, p.address, message_key=row.key, run_id=p.run_id,
                                  attempt=row.attempts,
                                  data={"next_attempt_at": None, "reason": "crashed"}))
        report.actions["released"] += 1
    else:
        p._label([row.provider_id], add=[s.label_failed], remove=[s.label_processing],
                 report=cycle)
        p.journal.append(ev.Event(ev.DEAD_LETTERED, p.address, message_key=row.key,
                                  run_id=p.run_id, attempt=row.attempts,
                                  data={"reason": "max_attempts"}))
        report.actions["dead_lettered"] += 1


def _finish_processed(p: Pipeline, row: Any, report: ReconcileReport,
                      cycle: CycleReport) -> None:
    """The handler finished: send what is not known to be sent (looking first), then ack."""
    unsent = p.journal.unsent_outbox(row.key)
    point = _history_point(p, row.key)
    # The event takes the lease, so the pipeline's own send and ack paths run under this run.
    p.journal.append(_reconciled(p, row.key, "processed",
                                 "completed_sends" if unsent else "acked",
                                 unsent=[o.rfc_message_id for o in unsent],
                                 dead_run=row.lease_run_id,
                                 lease_until=p.lease_until().isoformat()))
    before = cycle.sent
    if not p.send_outbox(row.key, cycle, since_history_id=point or "0"):
        report.actions["sends_postponed"] += 1
        return
    recovered = cycle.sent - before
    if unsent:
        report.actions["sends_completed"] += recovered
    p.ack([p.journal.message(row.key)], cycle)
    report.actions["acked"] += 1


def _history_point(p: Pipeline, key: str) -> str | None:
    for e in reversed(p.journal.events_of_message(key)):
        if e.kind == ev.PROCESSED:
            return e.data.get("history_point")
    return None


def _release_drift(p: Pipeline, report: ReconcileReport) -> None:
    """Processing labels in the mailbox that no in-flight claim of a live run explains."""
    try:
        labelled = p.mailbox.list_labelled(p.settings.label_processing, DRIFT_SCAN_LIMIT)
    except errors.MailboxError as exc:
        log.warning("%s: could not scan for stray processing labels: %s", p.address, exc)
        return
    held = {r.provider_id for r in p.journal.in_flight(p.address)}
    stray = [ref.id for ref in labelled if ref.id not in held]
    if not stray:
        return
    p._label(stray, remove=[p.settings.label_processing], report=CycleReport())
    p.journal.append(_reconciled(p, None, "processing_label_without_claim", "label_removed",
                                 provider_ids=stray))
    report.actions["labels_removed"] += len(stray)
