"""Schema creation and migration (alembic), and the check every command runs first."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine

from dbdict_worker.db.schema import SCHEMA_REVISION, VERSION_TABLE
from dbdict_worker.errors import SchemaError


def script_location() -> str:
    """Where the alembic scripts are: ``migrations/`` beside this module, in the source tree
    and in an installed wheel alike."""
    here = Path(__file__).resolve().parent / "migrations"
    if not (here / "env.py").is_file():
        raise SchemaError("the migration scripts are missing from this installation")
    return str(here)


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config pointing at our scripts (and at ``connection`` if given)."""
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def current_revision(conn: Connection) -> str | None:
    """The schema revision recorded in the database, or None if there is no schema."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Create or migrate the schema to the newest revision; returns (before, after)."""
    with engine.begin() as conn:
        before = current_revision(conn)
        try:
            command.upgrade(alembic_config(conn), "head")
        except CommandError as exc:  # e.g. a revision this code does not know
            raise SchemaError(f"cannot upgrade the schema (at {before}): {exc}") from None
        after = current_revision(conn)
    return before, after or SCHEMA_REVISION


def check(conn: Connection, where: str) -> None:
    """Raise SchemaError (naming ``dbdict db upgrade``) unless the schema is current."""
    rev = current_revision(conn)
    if rev == SCHEMA_REVISION:
        return
    if rev is None:
        raise SchemaError(f"no dbdict schema in {where}: run `dbdict db upgrade` first")
    try:
        newer = int(rev) > int(SCHEMA_REVISION)
    except ValueError:
        newer = False
    if newer:
        raise SchemaError(
            f"the schema in {where} is at revision {rev}, newer than this dbdict-worker "
            f"({SCHEMA_REVISION}): upgrade dbdict-worker"
        )
    raise SchemaError(
        f"the schema in {where} is at revision {rev}, this dbdict-worker needs "
        f"{SCHEMA_REVISION}: run `dbdict db upgrade`"
    )
