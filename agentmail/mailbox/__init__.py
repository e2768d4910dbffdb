"""The Mailbox port and its adapters.

``base`` is the port (what the pipeline may ask of a mailbox), ``delivery`` sends
through any port exactly once, ``gmail`` is the Gmail API adapter. Import the
adapter module explicitly: importing this package does not load googleapiclient.
"""

from __future__ import annotations

from agentmail.mailbox.base import (
    OUTBOX_ID_HEADER,
    Changes,
    Mailbox,
    MessageRef,
    RawMessage,
    RetryPolicy,
)
from agentmail.mailbox.delivery import send_exactly_once

__all__ = [
    "OUTBOX_ID_HEADER",
    "Changes",
    "Mailbox",
    "MessageRef",
    "RawMessage",
    "RetryPolicy",
    "send_exactly_once",
]
