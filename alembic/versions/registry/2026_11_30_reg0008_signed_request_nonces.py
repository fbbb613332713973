"""signed request nonces

Revision ID: reg0008
Revises: reg0007
Create Date: 2026-11-30 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'reg0008'
down_revision: str | None = 'reg0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nonces of admitted signed requests, so that a replay within the acceptance window is
    # refused by every process of a service sharing the database, and after a restart.
    op.create_table('registry_signed_request_nonces',
    sa.Column('audience', sa.String(length=255), nullable=False),
    sa.Column('caller', sa.String(length=1024), nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('audience', 'caller', 'nonce', name=op.f('pk_registry_signed_request_nonces'))
    )
    op.create_index('ix_registry_signed_request_nonces_expires_at', 'registry_signed_request_nonces', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_registry_signed_request_nonces_expires_at', table_name='registry_signed_request_nonces')
    op.drop_table('registry_signed_request_nonces')
