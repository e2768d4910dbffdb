"""Intake: bring new mail into the journal, screened, before any handler sees it.

Part of the pipeline (`Pipeline` inherits it): sync from the mailbox's cursor, fetch in
chunks, parse and screen each message (trust policy, duplicate deliveries), journal the
chunk. One message that cannot be parsed, screened or journaled never keeps the others
out: it is journaled as it came (the handler stage then fails it like any poison
message), or, if the journal refuses it altogether, fetched again next cycle.

The duplicate rule: a second copy in one mailbox with the same Message-ID, the same sender
and the same body digest as the first is journaled `duplicate` (acked in the mailbox,
never handed to the handler, shown in history). A copy that differs in sender or body is
processed, and its replies get Message-IDs of their own (see `Pipeline._salt`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentmail import errors, policy, records
from agentmail import message as msg
from agentmail.config import Settings
from agentmail.journal import events as ev
from agentmail.journal.bodies import Body
from agentmail.journal.port import JournalPort
from agentmail.mailbox import base as mb
from agentmail.screening import Screen

if TYPE_CHECKING:
    from agentmail.pipeline import CycleReport

log = logging.getLogger("agentmail.pipeline")

SYSTEM_UNREAD = "UNREAD"


#: Bytes of mail downloaded at once: a backlog of large messages is fetched a few at a time,
#: so a run's memory does not grow with `max_messages` times the message size.
FETCH_BUDGET_BYTES = 8_000_000


@dataclass
class _Fetched:
    """One fetched message: the events journaling it and what it turned out to be."""

    provider_id: str
    key: str
    events: list[ev.Event]
    outcome: str  # "fetched" (pending for the handler), "rejected" or "duplicate"
    message: msg.Message | None
    reason: str | None = None
    answered: bool = False  # an error reply was queued with the rejection
    body: bytes | None = None  # kept for the handler stage: pending messages only


@dataclass
class _FirstCopy:
    """The first received copy of a Message-ID in this mailbox (digest read when needed)."""

    key: str
    sender: str | None
    digest: str | None


def body_digest(raw: bytes) -> str:
    """SHA-256 of a message's body (after the header block), line endings normalised."""
    sep = raw.find(b"\r\n\r\n")
    sep_len = 4
    lf = raw.find(b"\n\n")
    if sep < 0 or (0 <= lf < sep):
        sep, sep_len = lf, 2
    body = raw[sep + sep_len:] if sep >= 0 else b""
    return hashlib.sha256(body.replace(b"\r\n", b"\n").rstrip()).hexdigest()


class Intake:
    """Sync and fetch, for `Pipeline`."""

    journal: JournalPort
    mailbox: mb.Mailbox
    settings: Settings
    run_id: str
    address: str
    screen: Screen
    limits: msg.ParseLimits
    stop_requested: threading.Event
    hold_cursor: bool
    _cursor: str | None
    _parsed: dict[str, msg.Message]
    step: Callable[[str, dict[str, Any]], None]
    process_batch: Callable[[CycleReport], bool]
    send_outbox: Callable[..., bool]
    _label: Callable[..., None]

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
            for part in self._by_size(new[start:start + chunk], report):
                if self.stop_requested.is_set():
                    return  # the cursor stays: what was not fetched is listed again next run
                self._fetch(part, report)
                # Handle each part before fetching the next: a backlog of any size is worked
                # through with one part's messages in memory.
                while not self.stop_requested.is_set() and self.process_batch(report):
                    pass
        if self.hold_cursor:  # a message could not be journaled: list it again next time
            self.hold_cursor = False
            return
        if not account or account.history_id != changes.history_id:
            self.journal.append(ev.Event(ev.SYNCED, self.address, run_id=self.run_id,
                                         data={"history_id": changes.history_id,
                                               "full": report.full_sync}))

    def _by_size(self, ids: Sequence[str], report: CycleReport) -> list[list[str]]:
        """Ask the sizes first: reject what is over `max_message_bytes` without downloading
        it, and split the rest into parts of at most `FETCH_BUDGET_BYTES` (one message over
        the budget is a part of its own)."""
        if self.stop_requested.is_set():
            return []
        sizes = self.mailbox.sizes(ids)
        limit = self.settings.max_message_bytes
        too_large = [i for i in ids if sizes.get(i, 0) > limit]
        if too_large:
            self._reject_unread(too_large, sizes, report)
        parts: list[list[str]] = []
        total = 0
        for i in ids:
            if i not in sizes or sizes[i] > limit:
                continue  # gone meanwhile, or rejected above
            if not parts or (parts[-1] and total + sizes[i] > FETCH_BUDGET_BYTES):
                parts.append([])
                total = 0
            parts[-1].append(i)
            total += sizes[i]
        return parts

    def _reject_unread(self, ids: Sequence[str], sizes: dict[str, int],
                       report: CycleReport) -> None:
        """Journal oversized messages as rejected from their size alone: no body is
        downloaded or kept, and no error reply goes out (nothing vouches for a sender we
        have not read)."""
        limit = self.settings.max_message_bytes
        entries = []
        for i in ids:
            key = ev.message_key(self.address, i)
            details = {"size": sizes[i], "limit": limit, "limit_name": "max_message_bytes",
                       "downloaded": False}
            entries.append(_Fetched(i, key, [
                ev.Event(ev.FETCHED, self.address, message_key=key, run_id=self.run_id,
                         data={"provider_id": i, "size": sizes[i], "downloaded": False}),
                ev.Event(ev.REJECTED, self.address, message_key=key, run_id=self.run_id,
                         data={"reason": "too_large", "details": details})],
                "rejected", None, reason="too_large"))
        self._finish_chunk(self._journal_fetched(entries, report), report)

    def _fetch(self, ids: Sequence[str], report: CycleReport) -> None:
        raws = self.mailbox.get_raw(ids)
        parsed: list[tuple[mb.RawMessage, msg.Message | BaseException]] = []
        for raw in raws:
            try:
                parsed.append((raw, msg.parse(raw.raw, account=self.address, provider_id=raw.id,
                                              thread_id=raw.thread_id, limits=self.limits)))
            except Exception as exc:  # a bug (ours or a library's) on one message
                parsed.append((raw, exc))
        ids_in_chunk = list(dict.fromkeys(
            m.message_id for _, m in parsed if isinstance(m, msg.Message) and m.message_id))
        known = {mid: _FirstCopy(row.key, row.sender, None) for mid, row in
                 self.journal.first_copies(self.address, ids_in_chunk).items()}
        entries: list[_Fetched] = []
        for raw, message in parsed:
            try:
                if isinstance(message, BaseException):
                    raise message
                entry = self._screen_one(raw, message, known)
            except Exception as exc:  # a bug (ours or a library's) on one message
                log.warning("%s: could not screen message %s: %s", self.address, raw.id, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                entry = self._unscreened(raw, exc)
            entries.append(entry)
        report.fetched += len(raws)
        self._finish_chunk(self._journal_fetched(entries, report), report)

    def _finish_chunk(self, journaled: list[_Fetched], report: CycleReport) -> None:
        """After a chunk is journaled: tell the steps, label rejects and duplicates."""
        for entry in journaled:
            if entry.message is not None:
                self.step(entry.outcome, {"message": entry.message,
                                          "reason": entry.reason})
            if entry.outcome == "fetched" and entry.message is not None:
                self._parsed[entry.message.key] = entry.message
        rejected = [e.provider_id for e in journaled if e.outcome == "rejected"]
        if rejected:
            report.rejected += len(rejected)
            self._label(rejected, add=[self.settings.label_rejected], report=report)
        duplicates = [e.provider_id for e in journaled if e.outcome == "duplicate"]
        if duplicates:
            report.duplicates += len(duplicates)
            s = self.settings
            self._label(duplicates, add=[s.label_done], remove=[SYSTEM_UNREAD], report=report)
        for entry in journaled:
            if entry.answered:
                self.send_outbox(entry.key, report)

    def _screen_one(self, raw: mb.RawMessage, message: msg.Message,
                    known: dict[str, _FirstCopy]) -> _Fetched:
        """Screen one parsed message: the events that journal it, and what it is."""
        key = message.key
        digest = body_digest(raw.raw)
        data = {**records.fetched_data(message, raw), "body_digest": digest}
        first = known.get(message.message_id or "")
        if first is not None:
            data["repeats"] = first.key  # a second copy's replies get Message-IDs of their own
        fetched = ev.Event(ev.FETCHED, self.address, message_key=key, run_id=self.run_id,
                           data=data)
        verdict = policy.evaluate(message, self.screen.policy)
        if not verdict.accepted:
            rejection = self.screen.rejection(message, verdict, raw.raw)
            return _Fetched(raw.id, key, [fetched, *rejection], "rejected", message,
                            reason=verdict.reason,
                            answered=bool(rejection[0].data.get("outgoing")))
        if first is not None and self._same_delivery(first, message, digest):
            return _Fetched(raw.id, key, [fetched, ev.Event(
                ev.DUPLICATE, self.address, message_key=key, run_id=self.run_id,
                data={"duplicate_of": first.key, "message_id": message.message_id,
                      "rule": "same Message-ID, sender and body"})],
                "duplicate", message, reason="duplicate")
        if message.message_id and first is None:  # later copies in this chunk compare to it
            known[message.message_id] = _FirstCopy(key, message.sender, digest)
        return _Fetched(raw.id, key, [fetched], "fetched", message, body=raw.raw)

    def _same_delivery(self, first: _FirstCopy, message: msg.Message, digest: str) -> bool:
        """The duplicate rule: same Message-ID (given), same sender, same body digest."""
        if (first.sender or "").lower() != (message.sender or "").lower():
            return False
        if first.digest is None:
            fetched = next((e for e in self.journal.events_of_message(first.key)
                            if e.kind == ev.FETCHED), None)
            first.digest = fetched.data.get("body_digest", "") if fetched else ""
        return first.digest == digest

    def _unscreened(self, raw: mb.RawMessage, exc: BaseException) -> _Fetched:
        """A message we failed to parse or screen: journal it as received and pending, so
        the handler stage fails it like any poison message (retried, then dead-lettered)."""
        key = ev.message_key(self.address, raw.id)
        data = {"provider_id": raw.id, "thread_id": raw.thread_id,
                "labels": list(raw.label_ids), "size": len(raw.raw),
                "screen_error": f"{type(exc).__name__}: {exc}"[:500]}
        return _Fetched(raw.id, key, [ev.Event(ev.FETCHED, self.address, message_key=key,
                                               run_id=self.run_id, data=data)], "fetched", None,
                        body=raw.raw)

    def _journal_fetched(self, entries: list[_Fetched], report: CycleReport) -> list[_Fetched]:
        """Journal a chunk in one transaction; if that fails, message by message, so one
        message the journal refuses cannot keep the others out. A message that cannot be
        journaled at all holds the sync cursor, so the next cycle fetches it again."""
        events = [e for entry in entries for e in entry.events]
        if not events:
            return []
        try:
            self.journal.append(*events, bodies=[b for entry in entries for b in self._body(entry)])
            return entries
        except errors.JournalBusy:
            raise
        except Exception as exc:  # find which message it was
            log.warning("%s: journaling %d fetched message(s) failed (%s); one at a time",
                        self.address, len(entries), exc)
        done = []
        for entry in entries:
            try:
                self.journal.append(*entry.events, bodies=self._body(entry))
                done.append(entry)
            except errors.JournalBusy:
                raise
            except Exception as exc:  # this message's problem only
                self.hold_cursor = True
                report.errors.append(f"journal {entry.key}: {exc}")
                log.warning("%s: could not journal %s (%s); it is fetched again next cycle",
                            self.address, entry.key, exc)
        return done

    def _body(self, entry: _Fetched) -> list[Body]:
        return [Body(entry.key, self.address, entry.body)] if entry.body is not None else []
