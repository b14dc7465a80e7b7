"""Alembic environment for dbdict-worker.

``dbdict db upgrade`` runs this with an open connection in ``config.attributes["connection"]``.
Developers can also run plain alembic: ``alembic -x url=postgresql://... upgrade head``.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from dbdict_worker.db.schema import VERSION_TABLE, metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
