"""journal: events and projections

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('history_id', sa.String(length=32), nullable=True),
    sa.Column('last_sync_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('last_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('address', name=op.f('pk_accounts'))
    )
    op.create_table('conversations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('participants', sa.Text(), nullable=False),
    sa.Column('message_count', sa.Integer(), nullable=False),
    sa.Column('first_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('last_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations'))
    )
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversations_last_seq'), ['last_seq'], unique=False)

    op.create_table('events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('account', sa.String(length=320), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('message_key', sa.String(length=400), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('data', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_account_seq'), ['account', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_message_key_seq'), ['message_key', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_run_id'), ['run_id'], unique=False)

    op.create_table('message_refs',
    sa.Column('rfc_message_id', sa.String(length=998), nullable=False),
    sa.Column('conversation_id', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('rfc_message_id', name=op.f('pk_message_refs'))
    )
    with op.batch_alter_table('message_refs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_refs_conversation_id'), ['conversation_id'], unique=False)

    op.create_table('messages',
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('account', sa.String(length=320), nullable=False),
    sa.Column('provider_id', sa.String(length=128), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('thread_id', sa.String(length=128), nullable=True),
    sa.Column('rfc_message_id', sa.String(length=998), nullable=True),
    sa.Column('in_reply_to', sa.String(length=998), nullable=True),
    sa.Column('references', sa.Text(), nullable=False),
    sa.Column('sender', sa.String(length=320), nullable=True),
    sa.Column('recipients', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('payload', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_run_id', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('conversation_id', sa.String(length=32), nullable=True),
    sa.Column('first_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('last_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_messages')),
    sa.UniqueConstraint('account', 'provider_id', name=op.f('uq_messages_account_provider_id'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_account_state_next_attempt_at'), ['account', 'state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_account_thread_id'), ['account', 'thread_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_conversation_id_sent_at'), ['conversation_id', 'sent_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_lease_run_id'), ['lease_run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_rfc_message_id'), ['rfc_message_id'], unique=False)

    op.create_table('outbox',
    sa.Column('outbox_id', sa.String(length=128), nullable=False),
    sa.Column('account', sa.String(length=320), nullable=False),
    sa.Column('source_key', sa.String(length=400), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('rfc_message_id', sa.String(length=998), nullable=False),
    sa.Column('thread_id', sa.String(length=128), nullable=True),
    sa.Column('recipients', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('provider_id', sa.String(length=128), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('outbox_id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('source_key', 'position', name=op.f('uq_outbox_source_key_position'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_account_state'), ['account', 'state'], unique=False)

    op.create_table('runs',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('account', sa.String(length=320), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('summary', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_runs'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_account_status'), ['account', 'status'], unique=False)
        batch_op.create_index('uq_runs_live_account', ['account'], unique=True, sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('uq_runs_live_account', sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
        batch_op.drop_index(batch_op.f('ix_runs_account_status'))

    op.drop_table('runs')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_account_state'))

    op.drop_table('outbox')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_rfc_message_id'))
        batch_op.drop_index(batch_op.f('ix_messages_lease_run_id'))
        batch_op.drop_index(batch_op.f('ix_messages_conversation_id_sent_at'))
        batch_op.drop_index(batch_op.f('ix_messages_account_thread_id'))
        batch_op.drop_index(batch_op.f('ix_messages_account_state_next_attempt_at'))

    op.drop_table('messages')
    with op.batch_alter_table('message_refs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_refs_conversation_id'))

    op.drop_table('message_refs')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_run_id'))
        batch_op.drop_index(batch_op.f('ix_events_message_key_seq'))
        batch_op.drop_index(batch_op.f('ix_events_account_seq'))

    op.drop_table('events')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversations_last_seq'))

    op.drop_table('conversations')
    op.drop_table('accounts')
