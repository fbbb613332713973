"""Options every ``shahrah audit`` command that opens the audit server's database shares."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["data_dir_option", "db_option"]

data_dir_option = click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHAHRAH_AUDIT_DIR",
    help="The audit server's folder (keys, anchor, SQLite database). Env: SHAHRAH_AUDIT_DIR.",
)
db_option = click.option(
    "--db",
    envvar="SHAHRAH_DB",
    help="Database URL (sqlite:///... or postgresql://...); default: audit.db in --data-dir.",
)
