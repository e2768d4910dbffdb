"""`agentmail replay`: reprocess failed messages, as a journaled command through the pipeline.

Replay appends `replay_requested` (the projection gives the message a fresh attempt
budget and makes it pending), removes the failed label, and then either processes it now
with a `Run` of its mailbox -- the same claim → handle → send → ack code as `agentmail run`,
after the same start-up recovery -- or, queued, leaves it for the running agent.

What is replayed without --force: dead-lettered messages, and messages waiting to retry
after a failed attempt. --force adds messages that succeeded (acked) and pending ones not
tried yet. Never replayed: rejected mail (the trust policy decided; replay does not
override it), messages this agent sent, and messages in flight in a live run (refused).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from agentmail import errors
from agentmail.agent import Agent
from agentmail.config import Settings
from agentmail.journal import conversations
from agentmail.journal import events as ev
from agentmail.journal import projections as proj
from agentmail.journal.store import Journal, as_utc
from agentmail.mailbox.base import Mailbox
from agentmail.pipeline import CycleReport
from agentmail.services import handlers
from agentmail.services.runner import Run, run_is_alive

# Actions decided for each selected message
REPLAY = "replay"
SKIP = "skip"
REFUSE = "refuse"

# Outcomes
SUCCEEDED = "succeeded"
FAILED_AGAIN = "failed"
DEAD_LETTERED = "dead_lettered"
UNFINISHED = "unfinished"
QUEUED = "queued"
WOULD_REPLAY = "would_replay"
SKIPPED = "skipped"
REFUSED = "refused"

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: datetime) -> datetime:
    """`--since`: an ISO date or time (UTC unless it says otherwise), or an age like 2h, 3d."""
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise errors.UsageError(f"--since {text!r}: give an ISO date/time (2026-05-01, "
                                "2026-05-01T12:00) or an age (30m, 2h, 3d)") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


@dataclass
class ReplayItem:
    """One selected message: what replay decided, why, and what came of it."""

    key: str
    account: str
    provider_id: str
    message_id: str | None
    subject: str | None
    state: str  # before the replay
    action: str
    reason: str
    outcome: str | None = None
    error: str | None = None
    sent: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReplayReport:
    items: list[ReplayItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    looked_at: str = ""  # what the selection covered, said when nothing matched
    handlers: dict[str, str] = field(default_factory=dict)  # account -> "spec (why)"

    @property
    def failed(self) -> bool:
        """Exit 1: a replayed message failed again, or one asked for was refused."""
        return any(i.outcome in (FAILED_AGAIN, DEAD_LETTERED, UNFINISHED, REFUSED)
                   for i in self.items)


@dataclass
class Selection:
    messages: Sequence[str] = ()
    threads: Sequence[str] = ()
    failed: bool = False
    email: str | None = None
    since: datetime | None = None


def select(journal: Journal, sel: Selection) -> list[Any]:
    """The received messages the selection names, oldest first, each once."""
    if not (sel.messages or sel.threads or sel.failed or sel.since):
        raise errors.UsageError("say what to replay: --message ID, --thread ID or --failed "
                                "(with --email X and --since WHEN to narrow it)")
    rows: list[Any] = []
    for ident in sel.messages:
        found = journal.received_matching(ident, account=sel.email)
        if not found:
            raise errors.NotFound(f"no received message matches {ident!r}"
                                  + (f" in {sel.email}" if sel.email else "")
                                  + ": pass a Gmail message id or a Message-ID")
        rows += found
    for ident in sel.threads:
        cid = conversations.resolve_one(journal, ident)
        rows += [r for r in journal.conversation_messages(cid) if r.direction == "in"
                 and (sel.email is None or r.account == sel.email)]
    if sel.failed or (sel.since and not (sel.messages or sel.threads)):
        rows += journal.failed_since(sel.since, account=sel.email)
    if sel.since is not None:
        rows = [r for r in rows if as_utc(r.updated_at) >= sel.since]
    unique = {r.key: r for r in rows}
    return sorted(unique.values(), key=lambda r: r.first_seq)


def describe(sel: Selection) -> str:
    """What a selection looked at, in words: "dead-lettered or failing messages of a@x"."""
    parts = []
    if sel.messages:
        parts.append("messages " + ", ".join(sel.messages))
    if sel.threads:
        parts.append("received messages of conversation(s) " + ", ".join(sel.threads))
    if sel.failed or (sel.since and not (sel.messages or sel.threads)):
        parts.append("dead-lettered messages and messages waiting to retry")
    text = " and ".join(parts)
    text += f" of {sel.email}" if sel.email else " of every mailbox in the journal"
    if sel.since is not None:
        text += f", changed since {sel.since.isoformat(timespec='seconds')}"
    return text


def resolve_handler(journal: Journal, account: str, *, flag: str | None,
                    configured: str | None) -> tuple[str, str]:
    """(spec, why) of the handler to replay `account`'s messages with: --handler, else the one
    the mailbox's last run journaled, else the config's `handler`. Refuses to guess, since the
    default agent would really mail an acknowledgement to the original sender."""
    if flag:
        return flag, "--handler"
    script = None
    for started in journal.runs_started(account):
        spec = started.data.get("handler")
        if not spec or started.data.get("replay"):
            continue
        if handlers.importable(spec):
            return spec, f"the handler of run {(started.run_id or '')[:8]}"
        script = spec
        break
    if configured:
        return configured, "config 'handler'"
    if script:
        raise errors.UsageError(
            f"{account} was last run with {script}, a class defined in a script, which replay "
            "cannot import: pass --handler package.module:Class")
    raise errors.UsageError(
        f"no handler known for {account}: no run of it journaled one and the config names none;"
        " pass --handler package.module:Class (replay does not guess: the default agent would "
        "mail an acknowledgement to each sender)")


def decide(row: Any, *, force: bool, holder_alive: Callable[[str | None], bool]) -> tuple[str, str]:
    """(action, reason) for one message as the journal has it now."""
    error = f": {row.last_error}" if row.last_error else ""
    if row.state == proj.DEAD_LETTERED:
        return REPLAY, f"dead-lettered after {row.attempts} attempt(s){error}"
    if row.state == proj.PENDING and row.attempts:
        return REPLAY, f"failed {row.attempts} time(s), waiting to retry{error}"
    if row.state in proj.IN_FLIGHT_STATES:
        if holder_alive(row.lease_run_id):
            return REFUSE, (f"in flight in live run {(row.lease_run_id or '')[:8]}: wait for it "
                            "to finish, or stop that run first")
        return SKIP, (f"left in flight by run {(row.lease_run_id or '')[:8]}, which is gone: "
                      "recovery finishes it first (run without --queue, or `agentmail run`)")
    if row.state == proj.REJECTED:
        return SKIP, f"rejected by policy ({row.last_error}); replay does not override the policy"
    if row.state == proj.ACKED:
        if force:
            return REPLAY, "already succeeded; replayed because of --force"
        return SKIP, "already succeeded (--force replays it anyway)"
    if row.state == proj.PENDING:
        if force:
            return REPLAY, "pending, not tried yet; processed now because of --force"
        return SKIP, "pending, not tried yet: the next run handles it"
    return SKIP, f"state {row.state}"


def _item(row: Any, action: str, reason: str) -> ReplayItem:
    return ReplayItem(key=row.key, account=row.account, provider_id=row.provider_id,
                      message_id=row.rfc_message_id, subject=row.subject, state=row.state,
                      action=action, reason=reason,
                      outcome={SKIP: SKIPPED, REFUSE: REFUSED}.get(action))


class Replayer:
    """Replays a selection. `open_mailbox(settings, address)` and `load_agent(address)` are
    injected so the CLI, tests and library callers build adapters their own way."""

    def __init__(self, journal: Journal, settings: Settings, *,
                 open_mailbox: Callable[[Settings, str], Mailbox],
                 load_agent: Callable[[str], Agent]) -> None:
        self.journal = journal
        self.settings = settings
        self.open_mailbox = open_mailbox
        self.load_agent = load_agent
        self._alive = run_is_alive(settings, journal.clock)

    def _holder_alive(self, run_id: str | None) -> bool:
        run = self.journal.run(run_id) if run_id else None
        return run is not None and self._alive(run)

    def _decide(self, rows: Iterable[Any], force: bool) -> list[ReplayItem]:
        return [_item(r, *decide(r, force=force, holder_alive=self._holder_alive)) for r in rows]

    def replay(self, sel: Selection, *, force: bool = False, queue: bool = False,
               dry_run: bool = False) -> ReplayReport:
        rows = select(self.journal, sel)
        report = ReplayReport(looked_at=describe(sel))
        if force:
            report.warnings.append("--force: messages that already succeeded are handled again "
                                   "and their handler's replies sent again (as new messages)")
        if dry_run:
            report.items = self._decide(rows, force)
            for i in report.items:
                i.outcome = i.outcome or WOULD_REPLAY
            return report
        by_account: dict[str, list[Any]] = {}
        for r in rows:
            by_account.setdefault(r.account, []).append(r)
        if not queue:
            self._refuse_live_runs(by_account)
        for account, account_rows in by_account.items():
            if queue:
                report.items += self._queue(account, account_rows, force)
            else:
                report.items += self._process_now(account, account_rows, force)
        return report

    def _refuse_live_runs(self, by_account: dict[str, list[Any]]) -> None:
        for account in by_account:
            run = self.journal.live_run(account)
            if run is not None and self._alive(run):
                raise errors.AlreadyRunning(
                    f"{account} is being processed by live run {run.run_id[:8]} (pid {run.pid} "
                    f"on {run.host}): stop it first, or use --queue to leave the replay to it")

    def _request(self, run_id: str | None, item: ReplayItem, force: bool, queued: bool) -> None:
        self.journal.append(ev.Event(ev.REPLAY_REQUESTED, item.account, message_key=item.key,
                                     run_id=run_id, data={
                                         "previous_state": item.state, "reason": item.reason,
                                         "force": force, "queued": queued}))

    def _unfail(self, mailbox: Mailbox, items: list[ReplayItem]) -> None:
        failed = [i.provider_id for i in items if i.state == proj.DEAD_LETTERED]
        if failed:
            try:
                mailbox.modify(failed, remove=[self.settings.label_failed])
            except errors.MailboxError as exc:  # a mirror: the journal decides, not the label
                for i in items:
                    i.error = f"could not remove {self.settings.label_failed}: {exc}"

    def _queue(self, account: str, rows: list[Any], force: bool) -> list[ReplayItem]:
        items = self._decide(rows, force)
        chosen = [i for i in items if i.action == REPLAY]
        for i in chosen:
            self._request(None, i, force, queued=True)
            i.outcome = QUEUED
        if chosen:
            with self.open_mailbox(self.settings, account) as mailbox:
                self._unfail(mailbox, chosen)
        return items

    def _process_now(self, account: str, rows: list[Any], force: bool) -> list[ReplayItem]:
        agent = self.load_agent(account)
        with self.open_mailbox(self.settings, account) as mailbox, Run(
                journal=self.journal, mailbox=mailbox, agent=agent, settings=self.settings,
                run_data={"replay": True}) as run:
            # The run's start-up recovery may have finished or released some of them.
            current = [row for r in rows if (row := self.journal.message(r.key)) is not None]
            items = self._decide(current, force)
            chosen = [i for i in items if i.action == REPLAY]
            for i in chosen:
                self._request(run.run_id, i, force, queued=False)
            self._unfail(mailbox, chosen)
            if chosen:
                self._handle(run, mailbox, [row for i in chosen
                                            if (row := self.journal.message(i.key)) is not None])
            for i in chosen:
                self._outcome(i)
        return items

    def _handle(self, run: Run, mailbox: Mailbox, rows: list[Any]) -> None:
        """One attempt each, through the run's pipeline.

        Recovery after a crash in here looks for sent replies from the history point
        journaled with each result, so take one now, as a sync does before handling. And a
        replay is one attempt: failing again dead-letters the message at once, with the new
        error, instead of putting it back to pending with a fresh retry budget.
        """
        pipeline = run.pipeline
        pipeline._cursor = mailbox.history_point()
        normal = pipeline.settings
        pipeline.settings = dataclasses.replace(normal, max_attempts=1)
        try:
            cycle = CycleReport()
            pipeline.process_rows(rows, cycle)
            run.totals.add(cycle)
        finally:
            pipeline.settings = normal

    def _outcome(self, item: ReplayItem) -> None:
        row = self.journal.message(item.key)
        assert row is not None  # the item was made from this row; messages are never removed
        events = self.journal.events_of_message(item.key)
        start = max(e.seq or 0 for e in events if e.kind == ev.REPLAY_REQUESTED)
        after = [e for e in events if (e.seq or 0) > start]
        item.sent = sum(e.kind == ev.SENT for e in after)
        failure = next((e for e in reversed(after) if e.kind == ev.FAILED), None)
        if failure is not None:
            item.error = f"{failure.data.get('error_class')}: {failure.data.get('error')}"
        item.outcome = {proj.ACKED: SUCCEEDED, proj.DEAD_LETTERED: DEAD_LETTERED,
                        proj.PENDING: FAILED_AGAIN}.get(row.state, UNFINISHED)
