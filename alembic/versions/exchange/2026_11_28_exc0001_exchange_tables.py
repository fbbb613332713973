"""exchange tables

Revision ID: exc0001
Revises: 
Create Date: 2026-11-28 00:28:52.686724
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'exc0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ('exchange',)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('exchange_seen_requests',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('client', sa.String(length=1100), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_exchange_seen_requests'))
    )
    with op.batch_alter_table('exchange_seen_requests', schema=None) as batch_op:
        batch_op.create_index('ix_exchange_seen_requests_expires_at', ['expires_at'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('exchange_seen_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_exchange_seen_requests_expires_at')

    op.drop_table('exchange_seen_requests')

