"""gateway next certificate

Revision ID: reg0006
Revises: reg0005
Create Date: 2026-11-29 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'reg0006'
down_revision: str | None = 'reg0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A renewed certificate registered beside a gateway's current one. Nullable: a gateway
    # has none until its operator renews; unique, as the current pin is, since gateways find
    # a peer by either.
    with op.batch_alter_table('registry_gateways') as batch:
        batch.add_column(sa.Column('next_tls_certificate', sa.Text(), nullable=True))
        batch.add_column(sa.Column('next_tls_sha256', sa.String(length=64), nullable=True))
        batch.create_index(
            op.f('ix_registry_gateways_next_tls_sha256'), ['next_tls_sha256'], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table('registry_gateways') as batch:
        batch.drop_index(op.f('ix_registry_gateways_next_tls_sha256'))
        batch.drop_column('next_tls_sha256')
        batch.drop_column('next_tls_certificate')
