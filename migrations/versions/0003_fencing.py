"""fencing tokens on claims, run leases in database time, idempotent requests, duplicates

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_token', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('duplicate_of', sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column('handler_started_at', sa.DateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('content_digest', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_outbox_account_idempotency_key',
                                          ['account', 'idempotency_key'])
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('progress_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('progress_at')
        batch_op.drop_column('expires_at')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('uq_outbox_account_idempotency_key', type_='unique')
        batch_op.drop_column('content_digest')
        batch_op.drop_column('idempotency_key')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('handler_started_at')
        batch_op.drop_column('duplicate_of')
        batch_op.drop_column('lease_token')
