"""message_bodies: received messages' raw bytes out of the event log

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Events written before this revision keep their bodies inline (`fetched` data "raw");
the journal still reads them from there, and `agentmail journal compact` strips them
from finished messages.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'message_bodies',
        sa.Column('message_key', sa.String(length=400), nullable=False),
        sa.Column('account', sa.String(length=320), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('raw', sa.LargeBinary(), nullable=False),
        sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('message_key', name=op.f('pk_message_bodies')),
    )


def downgrade() -> None:
    op.drop_table('message_bodies')
