"""schema ids never reused

Revision ID: reg0007
Revises: reg0006
Create Date: 2026-11-30 04:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = 'reg0007'
down_revision: str | None = 'reg0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Without AUTOINCREMENT SQLite gives the highest rowid again once that schema is
    # permanently deleted, and gateways that keep validators by id would validate against
    # the deleted schema. SQLite adds AUTOINCREMENT only by rebuilding the table; the copy
    # starts the counter at the highest id held (an id deleted before this upgrade from the
    # top is not known any more). PostgreSQL's sequence never goes back: nothing to do.
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        'registry_schemas', recreate='always', table_kwargs={'sqlite_autoincrement': True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        'registry_schemas', recreate='always', table_kwargs={'sqlite_autoincrement': False}
    ):
        pass
