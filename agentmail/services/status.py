"""`agentmail status`: how each mailbox of the journal is doing, from the journal alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentmail import errors
from agentmail.config import Settings
from agentmail.journal.store import Journal, as_utc
from agentmail.services.runner import run_is_alive


@dataclass
class AccountStatus:
    """One mailbox: its last run, its sync cursor, its messages by status, its last error."""

    address: str
    last_run: dict[str, Any] | None
    last_sync_at: datetime | None
    history_id: str | None
    counts: dict[str, int] = field(default_factory=dict)
    oldest_pending_at: datetime | None = None
    oldest_pending_age: float | None = None  # seconds
    last_error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address, "last_run": self.last_run,
            "last_sync_at": _iso(self.last_sync_at), "history_id": self.history_id,
            "counts": self.counts, "oldest_pending_at": _iso(self.oldest_pending_at),
            "oldest_pending_age_seconds": self.oldest_pending_age, "last_error": self.last_error,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _run(journal: Journal, settings: Settings, address: str) -> dict[str, Any] | None:
    run = journal.last_run(address)
    if run is None:
        return None
    return {
        "run_id": run.run_id, "alive": run_is_alive(settings, journal.clock)(run),
        "status": run.status, "host": run.host, "pid": run.pid,
        "started_at": _iso(as_utc(run.started_at)), "heartbeat_at": _iso(as_utc(run.heartbeat_at)),
        "stopped_at": _iso(as_utc(run.stopped_at)),
    }


def account_status(journal: Journal, settings: Settings, address: str) -> AccountStatus:
    account = journal.account(address)
    oldest = journal.oldest_pending_since(address)
    failure = journal.last_failure(address)
    return AccountStatus(
        address=address, last_run=_run(journal, settings, address),
        last_sync_at=as_utc(account.last_sync_at) if account else None,
        history_id=account.history_id if account else None,
        counts=journal.message_counts(address), oldest_pending_at=oldest,
        oldest_pending_age=(journal.clock() - oldest).total_seconds() if oldest else None,
        last_error=None if failure is None else {
            "at": _iso(failure.at), "message_key": failure.message_key,
            "error": f"{failure.data.get('error_class')}: {failure.data.get('error')}",
            "stage": failure.data.get("stage"), "attempt": failure.attempt})


def status(journal: Journal, settings: Settings, email: str | None = None) -> list[AccountStatus]:
    """Every account the journal knows (or just `email`)."""
    if email is not None:
        if journal.account(email) is None:
            raise errors.NotFound(f"the journal knows no account {email!r}; "
                                  "`agentmail status` lists the ones it has")
        return [account_status(journal, settings, email)]
    return [account_status(journal, settings, a.address) for a in journal.accounts()]
