"""one gateway per TLS pin

Revision ID: reg0005
Revises: reg0004
Create Date: 2026-11-29 12:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'reg0005'
down_revision: str | None = 'reg0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Gateways know a peer by its certificate's pin, so a pin must name one gateway; the
    # registry checks this on every registration, and the index closes the race between
    # two at once. A registry that already holds a shared certificate cannot take the index:
    # say which gateways share one, for the operator to give each its own first.
    shared = op.get_bind().execute(
        sa.text(
            "SELECT tls_sha256, COUNT(*) FROM registry_gateways "
            "GROUP BY tls_sha256 HAVING COUNT(*) > 1"
        )
    ).all()
    if shared:
        pins = ", ".join(f"{pin[:16]}… ({count} gateways)" for pin, count in shared)
        raise RuntimeError(
            f"gateways share TLS certificates ({pins}); register a certificate of its own "
            "for each (shahrah registry gateway set GATEWAY --tls-cert FILE) and upgrade again"
        )
    op.create_index(
        op.f('ix_registry_gateways_tls_sha256'), 'registry_gateways', ['tls_sha256'], unique=True
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_registry_gateways_tls_sha256'), table_name='registry_gateways')
