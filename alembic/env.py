"""Alembic environment: every package's tables, on SQLite or PostgreSQL.

Run through ``shahrah db upgrade`` (or core.db.upgrade), which passes the
database URL; the same engine factory as the application applies, so SQLite
migrations run with WAL and foreign keys on.
"""

from alembic import context
from core.db import UTCDateTime, create_sync_engine
from shahrah.models import metadata

config = context.config
url = config.attributes.get("shahrah_url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise SystemExit("no database URL: run `shahrah db upgrade --db URL`")


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # Migrations spell out plain SQLAlchemy types, so they never import application code.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                compare_type=True,
                render_item=render_item,
                # SQLite cannot ALTER constraints in place; batch mode rebuilds the table.
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
