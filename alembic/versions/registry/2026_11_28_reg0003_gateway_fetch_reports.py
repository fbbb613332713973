"""gateway fetch reports

Revision ID: reg0003
Revises: reg0002
Create Date: 2026-11-28 04:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'reg0003'
down_revision: str | None = 'reg0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: the previous release never reads or writes it, so this is safe to
    # apply while it is still running.
    op.create_table(
        'registry_gateway_fetches',
        sa.Column('member', sa.String(length=1024), nullable=False),
        sa.Column('gateway', sa.String(length=255), nullable=False),
        sa.Column('serial', sa.Integer(), nullable=False),
        sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('member', 'gateway', name=op.f('pk_registry_gateway_fetches')),
    )


def downgrade() -> None:
    op.drop_table('registry_gateway_fetches')
