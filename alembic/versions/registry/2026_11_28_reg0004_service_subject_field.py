"""service subject field

Revision ID: reg0004
Revises: reg0003
Create Date: 2026-11-28 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'reg0004'
down_revision: str | None = 'reg0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, so the previous release keeps running while this is applied. Services under
    # consent registered before it have none, and their gateways refuse to release their
    # answers until an operator sets one (shahrah registry service set --subject-field).
    op.add_column(
        'registry_services', sa.Column('subject_field', sa.String(length=300), nullable=True)
    )


def downgrade() -> None:
    op.drop_column('registry_services', 'subject_field')
