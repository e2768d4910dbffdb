"""The Mailbox port: the few verbs the pipeline needs from a mail provider.

Who calls it: the pipeline (sync, fetch, claim/ack label changes), startup
reconciliation (``find_sent``) and :func:`agentmail.mailbox.delivery.send_exactly_once`,
which is the only way anything in agentmail sends mail.

Adapters (``gmail.py``) translate every provider, HTTP and socket error into
:mod:`agentmail.errors` before it leaves them:

- :class:`~agentmail.errors.MailboxUnavailable` -- could not reach it, 5xx, 429,
  rate limits; retry later (``retry_after`` seconds when the provider said when);
- :class:`~agentmail.errors.MailboxRejected` -- the provider said no; retrying the
  same call will not help (:class:`~agentmail.errors.HistoryExpired` for a stale
  history cursor: do a full sync);
- :class:`~agentmail.errors.AuthError` -- credentials missing, expired or revoked.

Idempotent verbs retry transient failures themselves; ``send`` never does.
A Mailbox is used from one thread at a time.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

#: Header carried by every outgoing message: the journal's id for it. Gmail may
#: replace a client's Message-ID on send, so "did it go out?" also looks for this.
OUTBOX_ID_HEADER = "X-Agentmail-Outbox-Id"


@dataclass(frozen=True)
class MessageRef:
    """A provider message id and the id of its thread (local to this mailbox)."""

    id: str
    thread_id: str


@dataclass(frozen=True)
class RawMessage:
    """A whole RFC 5322 message as stored by the provider, with its labels."""

    id: str
    thread_id: str
    label_ids: tuple[str, ...]
    raw: bytes
    internal_date_ms: int
    history_id: str


@dataclass(frozen=True)
class Changes:
    """New inbox mail since a cursor, oldest first, each message once.

    ``history_id`` is the cursor to store for the next call of
    :meth:`Mailbox.changes_since`.
    """

    added: tuple[MessageRef, ...]
    history_id: str


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for retryable mailbox failures.

    Try ``n`` (0-based) waits ``random() * min(cap, base * 2**n)`` seconds, or at
    least the provider's ``retry_after``. A ``retry_after`` longer than
    ``max_retry_after`` is not waited out: the error is raised for the caller to
    schedule (Gmail's send quota asks for hours). ``sleep``, ``clock`` (wall time,
    seconds since the epoch) and ``random`` are injectable for tests.
    """

    attempts: int = 6
    base: float = 0.5  # seconds
    cap: float = 32.0  # seconds
    max_retry_after: float = 120.0  # seconds
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.time, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before try ``attempt + 1``, or None to give up now."""
        if attempt + 1 >= self.attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        wait = self.random() * min(self.cap, self.base * 2**attempt)
        return max(wait, retry_after or 0.0)


_M = TypeVar("_M", bound="Mailbox")


class Mailbox(ABC):
    """One mail account, seen the way the pipeline needs it.

    Message ids are provider ids (Gmail's 16-hex ids). Label arguments accept
    label names (``agent-done``) or system label ids (``INBOX``, ``UNREAD``).
    Not thread-safe: use one Mailbox per thread. Close it (or use ``with``).
    """

    #: the mailbox owner's email address
    address: str

    @abstractmethod
    def profile(self) -> tuple[str, str]:
        """Return ``(email address, current history id)``."""

    @abstractmethod
    def changes_since(self, history_id: str) -> Changes:
        """Mail added to the inbox after ``history_id``, oldest first, deduplicated.

        Raises :class:`~agentmail.errors.HistoryExpired` when the cursor is too old:
        the caller then does a full sync with :meth:`list_unread`.
        """

    @abstractmethod
    def list_unread(self, limit: int) -> Changes:
        """Full sync: the newest ``limit`` unread inbox messages, returned oldest first.

        ``Changes.history_id`` is taken *before* listing, so mail that arrives
        during the listing is seen again by the next :meth:`changes_since`.
        """

    @abstractmethod
    def list_labelled(self, name: str, limit: int) -> list[MessageRef]:
        """Up to ``limit`` messages carrying the label ``name``, newest first.

        Reconciliation uses it to find processing labels that no live claim explains.
        """

    @abstractmethod
    def sizes(self, ids: Sequence[str]) -> dict[str, int]:
        """The size in bytes of each message, asked before any body is downloaded.

        Messages deleted in the meantime are left out of the result.
        """

    @abstractmethod
    def get_raw(self, ids: Sequence[str]) -> list[RawMessage]:
        """Fetch whole messages, in the order of ``ids``.

        Messages deleted in the meantime are left out of the result.
        """

    @abstractmethod
    def ensure_labels(self, names: Sequence[str]) -> None:
        """Make sure user labels with these names exist, creating the missing ones.

        Looks labels up once per Mailbox and caches them. Names match existing
        labels the way the provider compares them (Gmail: case-insensitively,
        with ``-``, ``/``, space and some punctuation treated as equal).
        """

    @abstractmethod
    def modify(self, ids: Sequence[str], add: Sequence[str] = (),
               remove: Sequence[str] = ()) -> None:
        """Add and remove labels on messages, in as few and cheap calls as possible."""

    @abstractmethod
    def history_point(self) -> str:
        """The mailbox's current history id; recorded before a send."""

    @abstractmethod
    def send(self, raw: bytes, thread_id: str | None = None) -> MessageRef:
        """Send one RFC 5322 message, once.

        Never retried: after :class:`~agentmail.errors.MailboxUnavailable` the
        message may or may not have gone out. Use
        :func:`agentmail.mailbox.delivery.send_exactly_once`, which asks
        :meth:`find_sent` before trying again.
        """

    @abstractmethod
    def find_sent(self, message_id: str, outbox_id: str,
                  since_history_id: str | None) -> MessageRef | None:
        """The sent copy of a message, if it went out; else None.

        Looks it up by RFC Message-ID, then (the provider may have replaced the
        Message-ID) by the :data:`OUTBOX_ID_HEADER` header among messages sent
        since ``since_history_id`` -- or, when that is unknown or too old, among
        recently sent messages.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections. The Mailbox cannot be used afterwards."""

    def __enter__(self: _M) -> _M:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
