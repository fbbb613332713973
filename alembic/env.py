"""Alembic environment: every package's tables, on SQLite or PostgreSQL.

Run through ``shahrah db upgrade`` (or core.db.upgrade), which passes the
database URL; the same engine factory as the application applies, so SQLite
migrations run with WAL and full sync; foreign keys are checked once at the
end instead of on each statement (see run_migrations_online).
"""

from sqlalchemy.engine import Connection

from alembic import context
from core.db import DatabaseError, UTCDateTime, create_sync_engine
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
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # SQLite cannot ALTER constraints in place: batch mode rebuilds the table,
                # dropping the old one. With foreign keys on, that drop deletes its rows
                # first and cascades into every table referring to it. SQLite's procedure
                # for changing a table: foreign keys off outside the transaction (inside
                # one the pragma does nothing), then check them all before committing.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection,
                target_metadata=metadata,
                compare_type=True,
                render_item=render_item,
                render_as_batch=sqlite,
                # One transaction for the whole upgrade on SQLite too (Alembic's default
                # there is one per migration), so a failed check rolls all of it back.
                transactional_ddl=True,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _refuse_broken_references(connection)
    finally:
        engine.dispose()


def _refuse_broken_references(connection: Connection) -> None:
    """Roll the upgrade back if a row refers to one that is not there (made by the upgrade,
    or there before it: SQLite enforces foreign keys only where a connection turned them on)."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({f"{row[0]} -> {row[2]}" for row in broken})
        raise DatabaseError(
            f"rows refer to rows that are not there ({', '.join(tables)}); nothing was "
            "upgraded: repair or remove those rows and upgrade again"
        )


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
