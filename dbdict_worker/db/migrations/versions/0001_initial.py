"""Initial schema: job tables, jobs, typed state, workers, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbdict_worker.db.schema import db_now

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)
Double = sa.Float(precision=53).with_variant(sa.Double(), "postgresql")


def _times(*names: str, nullable: bool = True) -> list[sa.Column]:
    return [sa.Column(n, Time, nullable=nullable, **({} if nullable else
                                                       {"server_default": db_now()}))
            for n in names]


def upgrade() -> None:
    op.create_table(
        "job_tables",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        *_times("created_at", nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("table_id", sa.Integer, sa.ForeignKey("job_tables.id"), nullable=False),
        sa.Column("experiment", sa.Text, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("priority", Double, nullable=False, server_default="1.0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("losses", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("params_hash", sa.String(64), nullable=False),
        sa.Column("replica", sa.Integer, nullable=False, server_default="0"),
        sa.Column("dedup", sa.Boolean, nullable=False, server_default=sa.true()),
        *_times("created_at", "updated_at", nullable=False),
        *_times("booked_at", "heartbeat_at", "finished_at"),
        sa.Column("worker_id", sa.Text),
        sa.Column("host", sa.Text),
        sa.Column("workdir", sa.Text),
        sa.Column("error", sa.Text),
    )
    ready = sa.text("status = 0")
    op.create_index("jobs_ready_by_table", "jobs", ["table_id", sa.text("priority DESC"), "id"],
                    postgresql_where=ready, sqlite_where=ready)
    op.create_index("jobs_ready", "jobs", [sa.text("priority DESC"), "id"],
                    postgresql_where=ready, sqlite_where=ready)
    op.create_index("jobs_dedup", "jobs", ["table_id", "experiment", "params_hash", "replica"],
                    unique=True, postgresql_where=sa.text("dedup"),
                    sqlite_where=sa.text("dedup"))
    running = sa.text("status = 1")
    op.create_index("jobs_running", "jobs", ["worker_id"],
                    postgresql_where=running, sqlite_where=running)
    op.create_index("jobs_table_status", "jobs", ["table_id", "status"])

    op.create_table(
        "state",
        sa.Column("job_id", BigId, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("vtype", sa.SmallInteger, nullable=False),
        sa.Column("num", Double),
        sa.Column("txt", sa.Text),
    )
    op.create_index("state_value", "state", ["key", sa.text("substr(txt, 1, 200)")])

    op.create_table(
        "workers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("tables", sa.Text),
        sa.Column("state", sa.Text, nullable=False, server_default="running"),
        sa.Column("drain_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        *_times("started_at", "heartbeat_at", nullable=False),
        *_times("stopped_at"),
    )
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("job_id", BigId, nullable=False),
        *_times("at", nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("worker_id", sa.Text),
        sa.Column("detail", sa.Text),
    )
    op.create_index("events_job", "events", ["job_id", "id"])

    if op.get_bind().dialect.name == "postgresql":
        # jobs and state churn on every booking and save: vacuum after 1-2% of rows changed
        # (the default waits for 20%), and leave room on each page for HOT updates.
        op.execute("ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.01, "
                   "autovacuum_analyze_scale_factor = 0.02, fillfactor = 85)")
        op.execute("ALTER TABLE state SET (autovacuum_vacuum_scale_factor = 0.02, "
                   "autovacuum_analyze_scale_factor = 0.05)")
        op.execute("ALTER TABLE workers SET (autovacuum_vacuum_scale_factor = 0.0, "
                   "autovacuum_vacuum_threshold = 50)")


def downgrade() -> None:
    for table in ("events", "workers", "state", "jobs", "job_tables"):
        op.drop_table(table)
