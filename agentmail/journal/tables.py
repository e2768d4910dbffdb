"""Table definitions of the journal: the append-only events and the projections.

Projections are derived state: every column here can be recomputed from the
events alone (`agentmail journal rebuild`). Only portable types are used so the
same schema runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Stable constraint names so Alembic migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements an INTEGER PRIMARY KEY; BigInteger elsewhere.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("account", String(320), nullable=False),
    Column("run_id", String(64)),
    Column("message_key", String(400)),
    Column("kind", String(32), nullable=False),
    Column("attempt", Integer),
    Column("data", Text, nullable=False),  # JSON document, carries its own version "v"
    Index(None, "message_key", "seq"),
    Index(None, "account", "seq"),
    Index(None, "run_id"),
)

# One row per message in one mailbox (inbound copies and our sent copies).
messages = Table(
    "messages",
    metadata,
    Column("key", String(400), primary_key=True),  # account:provider_id
    Column("account", String(320), nullable=False),
    Column("provider_id", String(128), nullable=False),
    Column("direction", String(8), nullable=False),  # "in" | "out"
    Column("thread_id", String(128)),
    Column("rfc_message_id", String(998)),
    Column("in_reply_to", String(998)),
    Column("references", Text, nullable=False, default="[]"),  # JSON list
    Column("sender", String(320)),
    Column("recipients", Text, nullable=False, default="[]"),  # JSON list
    Column("subject", Text),
    Column("sent_at", DateTime(timezone=True)),
    Column("payload", Text),  # JSON, as parsed from the body
    Column("state", String(24), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_run_id", String(64)),
    # The fencing token: bumped by every change of owner (claim, takeover, replay). Each state
    # change names the token it was decided under and succeeds only while it still holds.
    Column("lease_token", Integer, nullable=False, default=0, server_default="0"),
    # Mutable: extended by the holder's heartbeat, not by events (rebuild leaves the claim's own).
    Column("lease_expires_at", DateTime(timezone=True)),
    # Mutable too: set by the worker thread while the claim's handler runs, so recovery knows
    # exactly which crashed claims were inside their handler (charged an attempt): not those
    # that never started, nor those whose handler had returned when the process died.
    Column("handler_started_at", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("conversation_id", String(32)),
    Column("duplicate_of", String(400)),  # the key of the copy this one repeats (state duplicate)
    Column("first_seq", SeqType, nullable=False),
    Column("last_seq", SeqType, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("account", "provider_id"),
    Index(None, "account", "state", "next_attempt_at"),
    Index(None, "rfc_message_id"),
    Index(None, "conversation_id", "sent_at"),
    Index(None, "account", "thread_id"),
    Index(None, "lease_run_id"),
)

# Messages a handler produced, from `processed` until `sent`.
outbox = Table(
    "outbox",
    metadata,
    Column("outbox_id", String(128), primary_key=True),
    Column("account", String(320), nullable=False),
    Column("source_key", String(400), nullable=False),  # the message whose handling produced it
    Column("position", Integer, nullable=False),
    Column("rfc_message_id", String(998), nullable=False),
    Column("thread_id", String(128)),
    Column("recipients", Text, nullable=False),  # JSON list
    Column("subject", Text),
    Column("raw", Text, nullable=False),  # base64url of the RFC 5322 bytes: resent as is after a crash
    Column("state", String(16), nullable=False),  # "queued" | "sent"
    Column("provider_id", String(128)),
    Column("sent_at", DateTime(timezone=True)),
    Column("created_seq", SeqType, nullable=False),
    # `agentmail send --idempotency-key`: one request per key and account, its content's digest
    Column("idempotency_key", String(200)),
    Column("content_digest", String(64)),
    UniqueConstraint("source_key", "position"),
    UniqueConstraint("account", "idempotency_key"),
    Index(None, "account", "state"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("subject", Text),
    Column("participants", Text, nullable=False, default="[]"),  # JSON list, sorted
    Column("message_count", Integer, nullable=False, default=0),
    Column("first_at", DateTime(timezone=True)),
    Column("last_at", DateTime(timezone=True)),
    Column("created_seq", SeqType, nullable=False),
    Column("last_seq", SeqType, nullable=False),
    Index(None, "last_seq"),
)

# Every Message-ID seen, in a message or only in its references, and its conversation.
message_refs = Table(
    "message_refs",
    metadata,
    Column("rfc_message_id", String(998), primary_key=True),
    Column("conversation_id", String(32), nullable=False),
    Index(None, "conversation_id"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("address", String(320), primary_key=True),
    Column("history_id", String(32)),  # the sync cursor
    Column("last_sync_at", DateTime(timezone=True)),
    Column("first_seq", SeqType, nullable=False),
    Column("last_seq", SeqType, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("account", String(320), nullable=False),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("started_at", DateTime(timezone=True), nullable=False),
    # Mutable liveness, written by the run itself (never as events): a beat moves heartbeat_at
    # and expires_at (database time + the run's own lease); progress_at moves only when the
    # run's loop or a handler within its time limit advanced.
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("progress_at", DateTime(timezone=True)),
    Column("stopped_at", DateTime(timezone=True)),
    Column("status", String(16), nullable=False),  # "running" | "stopped"
    Column("summary", Text),  # JSON
    Index(None, "account", "status"),
)

# At most one live run per mailbox, enforced by the database rather than by a read-then-write.
Index(
    "uq_runs_live_account",
    runs.c.account,
    unique=True,
    sqlite_where=runs.c.status == "running",
    postgresql_where=runs.c.status == "running",
)

# Outgoing mail an MCP client asked for under `require_approval`, waiting for a person.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account", String(320), nullable=False),
    Column("action", String(16), nullable=False),  # "send" | "reply"
    Column("message_key", String(400)),  # reply: the claimed message it answers
    Column("request", Text, nullable=False),  # JSON: what to send
    Column("state", String(16), nullable=False),  # pending | approved | declined | done | failed
    Column("decided_by", String(320)),
    Column("note", Text),
    Column("result", Text),  # JSON: what was sent, or why it could not be
    Column("created_seq", SeqType, nullable=False),
    Column("last_seq", SeqType, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "state", "account"),
)

# The raw bytes of received messages the handler stage still needs, kept out of the event log so
# events stay small. Not a projection: primary data like the events, written in the `fetched`
# event's transaction and never recomputed. Rejected and duplicate copies keep no body;
# `agentmail journal compact` deletes the bodies of finished messages after
# `body_retention_days` (rebuild needs none of them).
message_bodies = Table(
    "message_bodies",
    metadata,
    Column("message_key", String(400), primary_key=True),
    Column("account", String(320), nullable=False),
    Column("size", Integer, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
)

PROJECTIONS = (messages, outbox, conversations, message_refs, accounts, runs, approvals)

# Conversation lookups (`agentmail history --thread ID`, `events --message ID`): a Gmail threadId
# or a provider message id is looked up without knowing which mailbox it belongs to.
Index("ix_messages_thread_id", messages.c.thread_id)
Index("ix_messages_provider_id", messages.c.provider_id)
# A reply still in the outbox is found by its Message-ID (`history --thread <queued id>`).
Index("ix_outbox_rfc_message_id", outbox.c.rfc_message_id)
