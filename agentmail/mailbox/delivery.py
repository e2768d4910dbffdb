"""Send a message exactly once through any :class:`~agentmail.mailbox.base.Mailbox`.

Who calls it: the pipeline after ``processed`` is journaled, and startup
reconciliation for outgoing messages not yet journaled ``sent``. Nothing else
in agentmail sends mail.

A send whose outcome is unknown (dropped connection, timeout, 5xx) may have gone
out. So before every retry it asks the mailbox whether the message is already
among the sent mail -- by Message-ID, and by the outbox id header among messages
sent since the history point recorded before the first try -- and sends again
only when it is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agentmail import errors
from agentmail.mailbox import base


def send_exactly_once(
    mailbox: base.Mailbox,
    raw: bytes,
    thread_id: str | None,
    message_id: str,
    outbox_id: str,
    *,
    attempts: int = 5,
    sleep: Callable[[float], None] | None = None,
    since_history_id: str | None = None,
    retry: base.RetryPolicy | None = None,
    record_point: Callable[[str], object] | None = None,
    history_point: str | None = None,
) -> tuple[base.MessageRef, bool]:
    """Send ``raw`` unless it already went out; return ``(sent copy, found_already_sent)``.

    ``sleep``: how to wait between tries (``time.sleep`` when None); unused with ``retry``.
    ``since_history_id``: the history point journaled before an earlier, interrupted
    attempt (reconciliation passes it); by default the current one is taken now and
    handed to ``record_point`` before the first try, for the caller to journal it
    (the write-ahead rule: after a crash, reconciliation passes it back).
    ``history_point``: a point the caller already journaled before this send (the
    pipeline's sync cursor); used instead of asking the mailbox, without looking first.
    Raises :class:`~agentmail.errors.MailboxUnavailable` when every try failed and
    the message was not found among the sent mail, or when the provider asks to
    wait longer than the policy allows; :class:`~agentmail.errors.MailboxRejected`
    when the provider refuses the message.
    """
    policy = retry or base.RetryPolicy(attempts=attempts, sleep=sleep or time.sleep)
    point = since_history_id or history_point or mailbox.history_point()
    if record_point is not None and since_history_id is None and history_point is None:
        record_point(point)
    # True once a send may have reached the provider: look before sending again.
    # An interrupted earlier attempt (since_history_id given) counts too.
    check_first = since_history_id is not None
    last: errors.MailboxUnavailable | None = None
    for attempt in range(policy.attempts):
        try:
            if check_first:
                found = mailbox.find_sent(message_id, outbox_id, point)
                if found is not None:
                    return found, True
                check_first = False
            return mailbox.send(raw, thread_id), False
        except errors.MailboxUnavailable as exc:
            last = exc
            check_first = True
            wait = policy.delay(attempt, exc.retry_after)
            if wait is None:
                break
            policy.sleep(wait)
    assert last is not None
    # The last try may itself have gone out: one final look before giving up.
    found = mailbox.find_sent(message_id, outbox_id, point)
    if found is not None:
        return found, True
    raise last
