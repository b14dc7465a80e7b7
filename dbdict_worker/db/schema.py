"""The tables, as SQLAlchemy Core metadata. The alembic migrations build exactly this.

- ``job_tables``: the named groups of jobs (the original ``.../db/TABLE``).
- ``jobs``: one row per job, normalized columns only.
- ``state``: the job's state, one typed row per flat dotted key.
- ``workers``: live and past worker daemons.
- ``events``: an append-only history of each job.
- ``submissions``: who enqueued jobs, how, and from which version of the code.
- ``job_logs``: the tail of each attempt's stdout and stderr.
- ``metrics``: the intermediate metrics a job reports (``channel.report``).
- ``searches``: one row per ``dbdict search``; its trials are jobs.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from dbdict_worker.constants import DEFAULT_MAX_RESTARTS

#: The alembic revision this code expects (a test checks it is the migrations' head).
SCHEMA_REVISION = "0006"
#: Our own alembic version table, so we never collide with an application's ``alembic_version``.
VERSION_TABLE = "dbdict_schema_version"

metadata = sa.MetaData()

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)
Double = sa.Float(precision=53).with_variant(sa.Double(), "postgresql")
# Text compared byte by byte on PostgreSQL (COLLATE "C"), for the columns of the big indexes:
# the database's locale collation (en_US.UTF-8, or even C.UTF-8) makes every btree comparison
# a strcoll() call, and a bulk enqueue spends most of its time there (1M state rows: 6.9 s
# with the default collation, 3.8 s with "C"). Equality is the same either way; ordering
# becomes code point order. SQLite compares bytes already.
ByteText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
ByteHash = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


class db_now(FunctionElement):
    """The database clock (all times come from the server, never from a worker's clock)."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True


@compiles(db_now)
def _now_default(element, compiler, **kw):  # noqa: ANN001
    return "now()"


@compiles(db_now, "sqlite")
def _now_sqlite(element, compiler, **kw):  # noqa: ANN001
    # The same text format SQLAlchemy writes for DATETIME on SQLite, so values compare as text.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


class db_ago(FunctionElement):
    """The database clock minus a number of seconds (one argument)."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True


class db_later(FunctionElement):
    """The database clock plus a number of seconds (one argument)."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True


def _compile_clock_offset(cls: type, sign: str) -> None:
    """Compile ``cls(seconds)`` as the database clock ``sign`` (+ or -) that many seconds."""
    @compiles(cls)
    def _default(element, compiler, **kw):  # noqa: ANN001
        seconds = compiler.process(element.clauses, **kw)
        return f"(now() {sign} make_interval(secs => {seconds}))"

    @compiles(cls, "sqlite")
    def _sqlite(element, compiler, **kw):  # noqa: ANN001
        seconds = compiler.process(element.clauses, **kw)
        return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('{sign}%f seconds', {seconds}))"


_compile_clock_offset(db_ago, "-")
_compile_clock_offset(db_later, "+")


job_tables = sa.Table(
    "job_tables",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", Time, nullable=False, server_default=db_now()),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("table_id", sa.Integer, sa.ForeignKey("job_tables.id"), nullable=False),
    sa.Column("experiment", ByteText, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("priority", Double, nullable=False, server_default="1.0"),
    # attempts counts bookings (the fencing token is worker_id + attempts); losses counts
    # bookings that ended because the owner vanished, which max_attempts bounds.
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("losses", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
    sa.Column("params_hash", ByteHash, nullable=False),
    sa.Column("replica", sa.Integer, nullable=False, server_default="0"),
    # False for the extra copies that --force adds; only dedup rows take part in the
    # uniqueness that makes a repeated enqueue a no-op.
    sa.Column("dedup", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", Time, nullable=False, server_default=db_now()),
    sa.Column("updated_at", Time, nullable=False, server_default=db_now()),
    sa.Column("booked_at", Time),
    sa.Column("heartbeat_at", Time),
    sa.Column("finished_at", Time),
    sa.Column("worker_id", sa.Text),
    sa.Column("host", sa.Text),
    sa.Column("workdir", sa.Text),
    sa.Column("error", sa.Text),
    # restarts counts the INCOMPLETE returns in a row without new progress, which
    # max_restarts bounds; each such return puts the job back with not_before set (NULL:
    # ready now). Booking skips jobs whose not_before is still ahead, and clears it.
    sa.Column("not_before", Time),
    sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_restarts", sa.Integer, nullable=False,
              server_default=str(DEFAULT_MAX_RESTARTS)),
    # Retries of failed attempts: ``retry_on`` lists the failure classes retried (comma
    # separated: error, lost, timeout, sync; NULL: none but losses, which max_attempts
    # bounds), ``retries`` how many, ``retried`` how many were used, ``retry_delay`` the
    # first delay in seconds (NULL: the default).
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retried", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retry_on", sa.Text),
    sa.Column("retry_delay", Double),
    # Limits of one attempt, in seconds (NULL: none): wall time, and time without a sign of
    # life (no save, no output, no CPU time).
    sa.Column("timeout", Double),
    sa.Column("stall_after", Double),
    # Provenance: the enqueue that made the job, and the latest attempt's (JSON object).
    sa.Column("submission_id", BigId),
    sa.Column("run_info", sa.Text),
    # Search: the search whose trial this job is, the trial's number in it, and whether the
    # search's pruner asked it to stop early (its worker then tells the experiment).
    sa.Column("search_id", BigId),
    sa.Column("trial", sa.Integer),
    sa.Column("prune_requested", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Booking reads these, ordered exactly like the booking query; they hold only ready jobs.
sa.Index(
    "jobs_ready_by_table",
    jobs.c.table_id,
    jobs.c.priority.desc(),
    jobs.c.id,
    postgresql_where=jobs.c.status == 0,
    sqlite_where=jobs.c.status == 0,
)
sa.Index(
    "jobs_ready",
    jobs.c.priority.desc(),
    jobs.c.id,
    postgresql_where=jobs.c.status == 0,
    sqlite_where=jobs.c.status == 0,
)
sa.Index(
    "jobs_dedup",
    jobs.c.table_id,
    jobs.c.experiment,
    jobs.c.params_hash,
    jobs.c.replica,
    unique=True,
    postgresql_where=jobs.c.dedup,
    sqlite_where=jobs.c.dedup,
)
# Running jobs by owner: heartbeats, lease rescue, status. heartbeat_at is deliberately not
# indexed so that heartbeat updates stay HOT on PostgreSQL.
sa.Index(
    "jobs_running",
    jobs.c.worker_id,
    postgresql_where=jobs.c.status == 1,
    sqlite_where=jobs.c.status == 1,
)
sa.Index("jobs_table_status", jobs.c.table_id, jobs.c.status)
sa.Index("jobs_search", jobs.c.search_id, jobs.c.trial,
         postgresql_where=jobs.c.search_id.is_not(None),
         sqlite_where=jobs.c.search_id.is_not(None))

# Value types of the state table's vtype column.
VTYPE_NONE, VTYPE_BOOL, VTYPE_INT, VTYPE_FLOAT, VTYPE_STR, VTYPE_LIST, VTYPE_TUPLE = range(7)
#: Length of the string prefix indexed for ``key = 'value'`` filters (a btree entry must stay
#: small; the full value is compared after the index narrowed the rows).
TXT_PREFIX = 200

state = sa.Table(
    "state",
    metadata,
    # No foreign key to jobs: checking one per row halves the speed of a bulk enqueue (measured
    # with COPY of 1M rows); queries.delete() removes a job's state and events itself.
    sa.Column("job_id", BigId, primary_key=True),
    sa.Column("key", ByteText, primary_key=True),
    sa.Column("vtype", sa.SmallInteger, nullable=False),
    # num: the value of a bool/int/float as a number (sorting, the view).
    # txt: the exact text of every value but None: int digits, float repr (nan, inf), 'True' or
    # 'False', the string, or the Python literal of a list. Filters compare txt, so one index
    # serves them all; with vtype it gives the value back with its type.
    sa.Column("num", Double),
    sa.Column("txt", ByteText),
)
sa.Index("state_value", state.c.key, sa.func.substr(state.c.txt, 1, TXT_PREFIX))
# Pages sorted by a key walk this in order (db/dashboard.py): numbers by value, then text.
sa.Index("state_sort", state.c.key, state.c.num, sa.func.substr(state.c.txt, 1, TXT_PREFIX),
         state.c.job_id)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("tables", sa.Text),
    sa.Column("state", sa.Text, nullable=False, server_default="running"),
    sa.Column("drain_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("started_at", Time, nullable=False, server_default=db_now()),
    sa.Column("heartbeat_at", Time, nullable=False, server_default=db_now()),
    sa.Column("stopped_at", Time),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("job_id", BigId, nullable=False),  # no foreign key: see state.job_id
    sa.Column("at", Time, nullable=False, server_default=db_now()),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("worker_id", sa.Text),
    sa.Column("detail", sa.Text),
)
sa.Index("events_job", events.c.job_id, events.c.id)
# Autovacuum settings for the hot tables live in the migrations (PostgreSQL only).

submissions = sa.Table(
    "submissions",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("created_at", Time, nullable=False, server_default=db_now()),
    sa.Column("user", sa.Text),
    sa.Column("host", sa.Text),
    # The command line, as a JSON list, and the directory it ran in.
    sa.Column("command", sa.Text),
    sa.Column("cwd", sa.Text),
    # The git repository holding the experiment's code, its commit, whether it had
    # uncommitted changes and a hash of them (NULL: not in a repository, or no git).
    sa.Column("git_repo", sa.Text),
    sa.Column("git_commit", sa.Text),
    sa.Column("git_dirty", sa.Boolean),
    sa.Column("git_diff_hash", sa.Text),
)

job_logs = sa.Table(
    "job_logs",
    metadata,
    sa.Column("job_id", BigId, primary_key=True),  # no foreign key: see state.job_id
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("stream", sa.Text, primary_key=True),  # 'stdout' or 'stderr'
    # The last bytes of the stream (decoded as UTF-8, bad bytes replaced) and how many bytes
    # the attempt wrote in all.
    sa.Column("tail", sa.Text, nullable=False, server_default=""),
    sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", Time, nullable=False, server_default=db_now()),
)

metrics = sa.Table(
    "metrics",
    metadata,
    # What channel.report(step, **metrics) sent: one row per job, attempt, step and key.
    sa.Column("job_id", BigId, primary_key=True),  # no foreign key: see state.job_id
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("step", sa.BigInteger, primary_key=True),
    sa.Column("key", ByteText, primary_key=True),
    sa.Column("value", Double),
    sa.Column("at", Time, nullable=False, server_default=db_now()),
)

searches = sa.Table(
    "searches",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("table_id", sa.Integer, nullable=False),
    sa.Column("experiment", sa.Text, nullable=False),
    # The space as JSON (parsed from its TOML file), the objective key and its direction
    # ('minimize' or 'maximize'), the sampler's and pruner's names, the budget (trials in
    # all) and how many may be queued or running at once; options: the sampler's and
    # pruner's own settings, JSON.
    sa.Column("space", sa.Text, nullable=False),
    sa.Column("objective", sa.Text, nullable=False),
    sa.Column("direction", sa.Text, nullable=False),
    sa.Column("sampler", sa.Text, nullable=False),
    sa.Column("pruner", sa.Text, nullable=False, server_default="none"),
    sa.Column("budget", sa.Integer, nullable=False),
    sa.Column("max_pending", sa.Integer, nullable=False),
    sa.Column("seed", sa.BigInteger),
    sa.Column("options", sa.Text),
    sa.Column("created_at", Time, nullable=False, server_default=db_now()),
    sa.Column("finished_at", Time),
)
