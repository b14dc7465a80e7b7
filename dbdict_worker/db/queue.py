"""The queue core: booking, saving a booked job's state, releasing it (one job, or the ends
of many in one statement, with or without the next booking), heartbeats and the lease.
Enqueue is :mod:`.enqueue`.

Each statement's PostgreSQL and SQLite forms are written next to each other. PostgreSQL does
each step in one round trip (COPY for state rows, data-modifying CTEs for booking and
releasing, ``FOR UPDATE SKIP LOCKED`` so that bookers never wait for each other). SQLite has
one writer at a time (every transaction starts with ``BEGIN IMMEDIATE``): there the same step
is a few plain statements.

Like :mod:`.queries`: each function takes a connection inside the caller's transaction and
never commits. Every write for a booked job carries the ownership condition, :func:`owned`.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker import retrying
from dbdict_worker.db import values
from dbdict_worker.db.enqueue import insert_state, prepare_state
from dbdict_worker.db.models import (JOB_COLUMNS, Completion, Job, Rescued, Selection, Token,
                                     job_from_row, utc)
from dbdict_worker.db.queries import add_events, select_jobs, select_state
from dbdict_worker.db.schema import db_ago, db_later, db_now, events, job_tables, jobs, state

SQLITE = "sqlite"

# --------------------------------------------------------------------------------------------
# Ownership


def owned(worker_id: Any, bookings: Sequence[tuple[Any, Any]]) -> sa.ColumnElement[bool]:
    """The ownership (fencing) condition that every write for a booked job carries: the job
    is RUNNING, booked by ``worker_id``, by one of ``bookings``, ``(job id, attempt)`` pairs.

    ``attempt`` is the fencing token: the job's ``attempts`` count that the booking set. A
    cancel, a requeue or a lease rescue changes the status or the worker, and a later booking
    raises ``attempts``, so a former owner's write matches no row. Each part is a value or a
    bind parameter; one pair compiles to ``id = ... AND attempts = ...``, several to
    ``(id, attempts) IN (...)``.
    """
    if len(bookings) == 1:
        ((job_id, attempt),) = bookings
        return _owns(worker_id, job_id, attempt)
    return sa.and_(sa.tuple_(jobs.c.id, jobs.c.attempts).in_(bookings),
                   jobs.c.worker_id == worker_id, jobs.c.status == Status.RUNNING)


def _owns(worker_id: Any, job_id: Any, attempt: Any) -> sa.ColumnElement[bool]:
    """:func:`owned` for one job; each part a value, a bind parameter or a column (of the
    rows a batched write joins to)."""
    return sa.and_(jobs.c.id == job_id, jobs.c.attempts == attempt,
                   jobs.c.worker_id == worker_id, jobs.c.status == Status.RUNNING)


def _owned_by_binds() -> sa.ColumnElement[bool]:
    """:func:`owned` on the bind parameters ``own_worker``, ``own_id`` and ``own_attempt``."""
    return owned(sa.bindparam("own_worker"),
                 [(sa.bindparam("own_id"), sa.bindparam("own_attempt"))])


def _token_params(token: Token) -> dict[str, Any]:
    return {"own_id": token.job_id, "own_worker": token.worker_id, "own_attempt": token.attempt}


# --------------------------------------------------------------------------------------------
# Booking


def _due() -> sa.ColumnElement[bool]:
    """A START job's ``not_before`` has come (or it has none)."""
    return sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= db_now())


def _pick(with_tables: bool) -> sa.Select:
    """The ready jobs to book, in booking order (the order of the ``jobs_ready*`` indexes)."""
    # A job waiting out its restart delay stays in the ready indexes; the scan in index order
    # steps over it (such jobs are few), so neither index needs the time.
    ready = [jobs.c.status == Status.START, _due()]
    if with_tables:
        ready.append(jobs.c.table_id.in_(sa.bindparam("table_ids", expanding=True)))
    return (sa.select(jobs.c.id).where(*ready)
            .order_by(jobs.c.priority.desc(), jobs.c.id).limit(sa.bindparam("n")))


def _booked_values() -> dict[str, Any]:
    """What a booking sets on each booked row."""
    return dict(
        status=Status.RUNNING, attempts=jobs.c.attempts + 1, worker_id=sa.bindparam("new_worker"),
        host=sa.bindparam("new_host"), booked_at=db_now(), heartbeat_at=db_now(),
        updated_at=db_now(), finished_at=sa.null(), error=sa.null(), not_before=sa.null(),
        run_info=sa.bindparam("new_run_info", None, type_=sa.Text(), required=False))


@functools.lru_cache(maxsize=None)
def booking_statements(dialect: str, with_tables: bool) -> tuple[sa.Executable, ...]:
    """The statements a booking sends, built once, with the bind parameters ``n`` (how many),
    ``new_worker``, ``new_host``, ``new_run_info`` (the attempt's provenance, JSON text;
    NULL when not given) and, ``with_tables``, ``table_ids``."""
    if dialect == SQLITE:
        # One writer at a time: no row lock to skip. The UPDATE returns the booked ids, then
        # one event per id (executemany of ``booked_id``); the rows are read back after.
        booking = (sa.update(jobs).where(jobs.c.id.in_(_pick(with_tables).scalar_subquery()))
                   .values(**_booked_values()).returning(jobs.c.id))
        logging = sa.insert(events).values(
            job_id=sa.bindparam("booked_id"), kind="booked", worker_id=sa.bindparam("new_worker"),
            detail=sa.bindparam("new_host"))
        return booking, logging
    # One round trip: pick the ready rows (skipping those another booker holds), update
    # them, log the events and return the rows with their table's name and their state.
    booked, logged, columns = _booking_parts(with_tables)
    return (sa.select(*columns).select_from(booked).add_cte(logged),)


def _booking_parts(with_tables: bool,
                   ) -> tuple[sa.FromClause, sa.CTE, list[sa.ColumnElement]]:
    """PostgreSQL booking's pieces: the booked rows joined to their table, the CTE that logs
    their events, and the columns to return (the job's, then its state as JSON)."""
    picked = _pick(with_tables).with_for_update(skip_locked=True).cte("picked")
    updated = (sa.update(jobs).where(jobs.c.id == picked.c.id).values(**_booked_values())
               .returning(*jobs.c).cte("booked"))
    logged = sa.insert(events).from_select(
        ["job_id", "kind", "worker_id", "detail"],
        sa.select(updated.c.id, sa.literal("booked"), sa.bindparam("new_worker"),
                  sa.bindparam("new_host"))).cte("logged")
    columns = [updated.c[c.name] if c.table is jobs else c for c in JOB_COLUMNS]
    # The state comes along as JSON: [[key, vtype, txt], ...] (txt alone spells every value).
    st = state.alias("s")
    state_json = (sa.select(sa.func.json_agg(sa.func.json_build_array(st.c.key, st.c.vtype,
                                                                      st.c.txt)))
                  .where(st.c.job_id == updated.c.id).scalar_subquery())
    return (updated.join(job_tables, job_tables.c.id == updated.c.table_id), logged,
            [*columns, state_json])


@functools.lru_cache(maxsize=None)
def finish_and_book_statement(with_tables: bool) -> sa.Executable:
    """PostgreSQL: the ends of :func:`finish_owned_many` (no new states) and a booking, in
    one statement: one round trip and one commit where a consumer whose claimed jobs all
    ended would make two. Its first column is the array of the ids written; then one row
    per booked job as a booking returns it (one row of NULLs when nothing was booked).
    Bind parameters: those of both."""
    ended = _finish_many_postgresql().cte("ended")
    written = sa.select(sa.func.array_agg(ended.c.job_id).label("written")).cte("written")
    booked, logged, columns = _booking_parts(with_tables)
    return (sa.select(written.c.written, *columns)
            .select_from(written.outerjoin(booked, sa.true())).add_cte(logged))


def next_due(conn: Connection, table_ids: Sequence[int] | None) -> float | None:
    """Seconds until the first START job waiting out a restart delay (among ``table_ids``,
    all tables when None) may be booked, by the database clock; None when no job waits."""
    waiting = [jobs.c.status == Status.START, jobs.c.not_before > db_now()]
    if table_ids is not None:
        waiting.append(jobs.c.table_id.in_(list(table_ids)))
    first, now = conn.execute(
        sa.select(sa.func.min(jobs.c.not_before), db_now()).where(*waiting)).one()
    if first is None:
        return None
    return max(0.0, (utc(first) - utc(now)).total_seconds())


def book(conn: Connection, *, worker_id: str, host: str, table_ids: Sequence[int] | None,
         n: int, run_info: str | None = None) -> list[tuple[Job, dict[str, Any]]]:
    """Book up to ``n`` ready jobs for ``worker_id``, highest priority first, then lowest
    id; rows another booker holds are skipped, never waited for; each gets ``run_info``.
    Returns each job with its flat state (one round trip on PostgreSQL)."""
    params = _booking_params(worker_id, host, table_ids, n, run_info)
    statements = booking_statements(conn.dialect.name, table_ids is not None)
    if conn.dialect.name == SQLITE:
        booking, logging = statements
        ids = list(conn.execute(booking, params).scalars())
        if not ids:
            return []
        conn.execute(logging, [{"booked_id": i, "new_worker": worker_id, "new_host": host}
                               for i in ids])
        states = select_state(conn, ids)
        booked = [(j, states[j.id]) for j in select_jobs(conn, Selection(ids=tuple(ids)))]
    else:
        (booking,) = statements
        booked = _booked(conn.execute(booking, params))
    return sorted(booked, key=lambda b: (-b[0].priority, b[0].id))


def _booked(rows: Iterable[Sequence[Any]]) -> list[tuple[Job, dict[str, Any]]]:
    """Each booked row (the job's columns, then its state as JSON) as a job and its flat
    state, sorted by key."""
    out = []
    for row in rows:
        flat = {key: values.decode(vtype, None, txt) for key, vtype, txt in row[-1] or ()}
        out.append((job_from_row(row[:-1]), dict(sorted(flat.items()))))
    return out


def _booking_params(worker_id: str, host: str, table_ids: Sequence[int] | None, n: int,
                    run_info: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"n": n, "new_worker": worker_id, "new_host": host,
                              "new_run_info": run_info}
    if table_ids is not None:
        params["table_ids"] = list(table_ids)
    return params


def _finish_params(worker_id: str, done: Sequence[tuple[Completion, str]]) -> dict[str, Any]:
    rows = [(c.token.job_id, c.token.attempt, int(c.status), c.error, c.workdir, detail)
            for c, detail in sorted(done, key=lambda d: d[0].token.job_id)]  # lock order
    params: dict[str, Any] = {bind: list(column)
                              for (bind, _, _), column in zip(_FINISH_ARRAYS, zip(*rows))}
    params["own_worker"] = worker_id
    return params


def finish_and_book(conn: Connection, *, worker_id: str, host: str,
                    table_ids: Sequence[int] | None, n: int, run_info: str | None,
                    done: Sequence[tuple[Completion, str]],
                    ) -> tuple[list[int], list[tuple[Job, dict[str, Any]]]]:
    """:func:`finish_owned_many` of ``done`` (whose completions carry no state), then
    :func:`book` of up to ``n`` jobs; one statement on PostgreSQL. Returns the ids written
    and the jobs booked."""
    if any(c.state is not None for c, _ in done):
        raise ValueError("finish_and_book() takes completions without a state")
    if conn.dialect.name == SQLITE or not done:
        written = finish_owned_many(conn, worker_id, done)
        return written, book(conn, worker_id=worker_id, host=host, table_ids=table_ids, n=n,
                             run_info=run_info)
    params = dict(_finish_params(worker_id, done),
                  **_booking_params(worker_id, host, table_ids, n, run_info))
    rows = conn.execute(finish_and_book_statement(table_ids is not None), params).all()
    written = list(rows[0][0] or ()) if rows else []
    booked = _booked(row[1:] for row in rows if row[1] is not None)
    return written, sorted(booked, key=lambda b: (-b[0].priority, b[0].id))


# --------------------------------------------------------------------------------------------
# Saving a booked job's state


def touch_owned(conn: Connection, token: Token) -> bool:
    """Refresh the job's row if ``token`` still owns it; the row lock taken here also orders
    this transaction's later writes after any concurrent requeue. Returns False when ownership
    was lost."""
    stmt = (sa.update(jobs)
            .where(owned(token.worker_id, [(token.job_id, token.attempt)]))
            .values(updated_at=db_now(), heartbeat_at=db_now()))
    return conn.execute(stmt).rowcount == 1


def replace_state(conn: Connection, job_id: int, flat: Mapping[str, Any]) -> None:
    """Replace a job's whole state (the caller has checked ownership in this transaction)."""
    replace_states(conn, [(job_id, flat)])


def replace_states(conn: Connection, states: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
    """Replace the whole state of each job of ``states`` (``(job_id, flat)`` pairs): one
    DELETE and one COPY for them all (the caller has checked ownership)."""
    if not states:
        return
    conn.execute(sa.delete(state).where(state.c.job_id.in_([i for i, _ in states])))
    insert_state(conn, [(i, prepare_state(conn.dialect.name, flat)) for i, flat in states])


# --------------------------------------------------------------------------------------------
# Releasing a booked job (finish, or back to the queue)


@functools.lru_cache(maxsize=None)
def release_statements(dialect: str, requeue: bool,
                       with_workdir: bool) -> tuple[sa.Executable, ...]:
    """The statements a release sends, built once: a final status, or START again when
    ``requeue``. Bind parameters: the owner (``own_worker``, ``own_id``, ``own_attempt``),
    the new values (``new_status``, ``new_error``, ``new_workdir`` when ``with_workdir``;
    when ``requeue``: ``new_priority``, ``new_delay`` in seconds, 0 for none, and
    ``new_restarts`` and ``new_retried``, None to keep the count) and the event (``event_kind``,
    ``event_detail``)."""
    # Bind names differ from column names: in an UPDATE or INSERT, a parameter named like a
    # column is taken as that column's new value.
    changes: dict[str, Any] = dict(status=sa.bindparam("new_status"),
                                   error=sa.bindparam("new_error"),
                                   updated_at=db_now(), heartbeat_at=db_now())
    if with_workdir:
        changes["workdir"] = sa.bindparam("new_workdir")
    if requeue:
        delay = sa.bindparam("new_delay", type_=sa.Float())
        # A prune asked of the attempt that ended does not carry over to the next one.
        changes.update(priority=sa.bindparam("new_priority"), worker_id=sa.null(),
                       prune_requested=sa.false(),
                       not_before=sa.case((delay > sa.literal_column("0"), db_later(delay)),
                                          else_=sa.null()),
                       restarts=sa.func.coalesce(sa.bindparam("new_restarts", type_=sa.Integer()),
                                                 jobs.c.restarts),
                       retried=sa.func.coalesce(sa.bindparam("new_retried", type_=sa.Integer()),
                                                jobs.c.retried))
    else:
        changes["finished_at"] = db_now()
    release = sa.update(jobs).where(_owned_by_binds()).values(**changes)
    if dialect == SQLITE:
        # The UPDATE, then its event if it matched the row (the caller checks the rowcount).
        logging = sa.insert(events).values(
            job_id=sa.bindparam("own_id"), kind=sa.bindparam("event_kind"),
            worker_id=sa.bindparam("own_worker"), detail=sa.bindparam("event_detail"))
        return release, logging
    # One round trip: the UPDATE in a CTE feeds its event's INSERT; no row, no event.
    released = release.returning(jobs.c.id).cte("released")
    return (sa.insert(events).from_select(
        ["job_id", "kind", "worker_id", "detail"],
        sa.select(released.c.id, sa.bindparam("event_kind"), sa.bindparam("own_worker"),
                  sa.bindparam("event_detail"))).returning(events.c.job_id),)


def release_owned(conn: Connection, token: Token, status: Status, *, priority: float | None,
                  error: str | None, workdir: str | None, event: tuple[str, str],
                  delay: float = 0.0, restarts: int | None = None,
                  retried: int | None = None) -> bool:
    """End the owner's booking: a final status, or START again (requeue, at ``priority`` or
    RESTART_PRIORITY, bookable ``delay`` seconds from now by the database clock, with the
    restart and retry counts set to ``restarts`` and ``retried`` unless None), and log
    ``event`` (kind, detail).
    Conditional on ownership; returns False when it was lost."""
    requeue = status == Status.START
    kind, detail = event
    params = dict(_token_params(token), new_status=status, new_error=error,
                  event_kind=kind, event_detail=detail)
    if workdir is not None:
        params["new_workdir"] = workdir
    if requeue:
        params.update(new_priority=RESTART_PRIORITY if priority is None else priority,
                      new_delay=max(0.0, float(delay)), new_restarts=restarts,
                      new_retried=retried)
    statements = release_statements(conn.dialect.name, requeue, workdir is not None)
    if conn.dialect.name == SQLITE:
        release, logging = statements
        if conn.execute(release, params).rowcount != 1:
            return False
        conn.execute(logging, params)
        return True
    (release,) = statements
    return conn.execute(release, params).first() is not None


# The columns of a batched finish, each sent as one array: (bind name, column, type). Bind
# names differ from column names: in an UPDATE, a parameter named like a column is taken as
# that column's new value.
_FINISH_ARRAYS = (("given_ids", "id", sa.BigInteger),
                  ("given_attempts", "attempt", sa.Integer),
                  ("given_statuses", "status", sa.Integer),
                  ("given_errors", "error", sa.Text),
                  ("given_workdirs", "workdir", sa.Text),
                  ("given_details", "detail", sa.Text))


def finish_many_statements(dialect: str) -> tuple[sa.Executable, ...]:
    """The statements :func:`finish_owned_many` sends for the jobs themselves (then, for
    those with a final state, its DELETE and COPY): on SQLite those of
    :func:`release_owned`, once per job."""
    if dialect == SQLITE:
        return release_statements(SQLITE, False, True)
    return (_finish_many_postgresql(),)


@functools.lru_cache(maxsize=None)
def _finish_many_postgresql() -> sa.Executable:
    """One statement that ends many owned jobs: the new values travel as arrays (bind
    parameters ``given_ids``, ``given_attempts``, ``given_statuses``, ``given_errors``,
    ``given_workdirs`` (NULL keeps the workdir), ``given_details``, and the owner
    ``own_worker``); each row is released only if the
    worker still owns it, and each released row gets its ``finished`` event."""
    given = sa.func.unnest(*[sa.bindparam(bind, type_=postgresql.ARRAY(kind))
                             for bind, _, kind in _FINISH_ARRAYS]) \
        .table_valued(*[sa.column(name, kind) for _, name, kind in _FINISH_ARRAYS]) \
        .render_derived("given")
    owner = sa.bindparam("own_worker")
    released = (
        sa.update(jobs)
        .where(_owns(owner, given.c.id, given.c.attempt))
        .values(status=given.c.status, error=given.c.error,
                workdir=sa.func.coalesce(given.c.workdir, jobs.c.workdir),
                updated_at=db_now(), heartbeat_at=db_now(), finished_at=db_now())
        .returning(jobs.c.id, given.c.detail).cte("released"))
    return sa.insert(events).from_select(
        ["job_id", "kind", "worker_id", "detail"],
        sa.select(released.c.id, sa.literal("finished"), owner, released.c.detail),
    ).returning(events.c.job_id)


def finish_owned_many(conn: Connection, worker_id: str,
                      done: Sequence[tuple[Completion, str]]) -> list[int]:
    """End many jobs ``worker_id`` owns with their final status (and final state when one is
    given), each with a ``finished`` event of the paired detail; one statement on
    PostgreSQL. Returns the ids written (a job no longer owned is left untouched)."""
    if not done:
        return []
    if conn.dialect.name == SQLITE:
        written = [c.token.job_id for c, detail in done
                   if release_owned(conn, c.token, c.status, priority=None, error=c.error,
                                    workdir=c.workdir, event=("finished", detail))]
    else:
        written = list(conn.execute(_finish_many_postgresql(),
                                    _finish_params(worker_id, done)).scalars())
    mine = set(written)
    replace_states(conn, [(c.token.job_id, c.state) for c, _ in done
                          if c.state is not None and c.token.job_id in mine])
    return written


def unbook_owned(conn: Connection, token: Token, reason: str) -> bool:
    """Undo the owner's booking as if it had not happened: START again at the same priority,
    the attempt it counted taken back, and an ``unbooked`` event saying why. For a job that
    never started because the worker's own machine could not run it. Conditional on
    ownership; returns False when it was lost."""
    undone = conn.execute(
        sa.update(jobs).where(owned(token.worker_id, [(token.job_id, token.attempt)]))
        .values(status=Status.START, attempts=jobs.c.attempts - 1, worker_id=sa.null(),
                heartbeat_at=sa.null(), booked_at=sa.null(), updated_at=db_now())
    ).rowcount == 1
    if undone:
        add_events(conn, "unbooked", [token.job_id], worker_id=token.worker_id, detail=reason)
    return undone


# --------------------------------------------------------------------------------------------
# Heartbeats and the lease


def heartbeat(conn: Connection, worker_id: str, tokens: Sequence[Token]) -> dict[int, bool]:
    """Refresh the heartbeat of the jobs ``worker_id`` still owns among ``tokens``; returns
    the ids still owned (the others were lost: cancelled, requeued or deleted), each with
    whether a search's pruner asked to end it (read from the rows updated anyway: no index,
    no extra statement)."""
    if not tokens:
        return {}
    stmt = (sa.update(jobs)
            .where(owned(worker_id, [(t.job_id, t.attempt) for t in tokens]))
            .values(heartbeat_at=db_now())
            .returning(jobs.c.id, jobs.c.prune_requested))
    return {job_id: bool(prune) for job_id, prune in conn.execute(stmt)}


def requeue_stale(conn: Connection, *, lease_seconds: float,
                  by_worker: str | None = None) -> list[Rescued]:
    """Requeue RUNNING jobs whose heartbeat is older than the lease, at RESTART_PRIORITY,
    counting a loss; a job lost ``max_attempts`` times becomes ERR_RUN instead, unless its
    ``retry_on`` lists ``lost`` and it has retries left (:mod:`dbdict_worker.retrying`).

    On PostgreSQL a heartbeat is never older than the server's start: after a restart, every
    owner gets a whole lease to reach the server again and renew before its jobs are stale."""
    last_beat: sa.ColumnElement[Any] = jobs.c.heartbeat_at
    if conn.dialect.name != SQLITE:
        last_beat = sa.func.greatest(last_beat, sa.func.pg_postmaster_start_time())
    stale = (
        sa.select(jobs.c.id, jobs.c.worker_id, jobs.c.host, jobs.c.losses, jobs.c.max_attempts,
                  jobs.c.retries, jobs.c.retried, jobs.c.retry_on, jobs.c.retry_delay)
        .where(jobs.c.status == Status.RUNNING, last_beat < db_ago(lease_seconds))
        .order_by(jobs.c.id)
    )
    if conn.dialect.name != SQLITE:  # SQLite: one writer at a time, no row lock to skip
        stale = stale.with_for_update(skip_locked=True)
    out = []
    for (job_id, worker_id, host, losses, max_attempts, retries, retried, retry_on,
         retry_delay) in conn.execute(stale).all():
        lost = losses + 1
        why = f"lost: owner {worker_id} on {host} stopped heartbeating (loss {lost}/{max_attempts})"
        # Past max_attempts, a job whose retry_on lists "lost" may use a retry instead.
        retry = retrying.next_retry("lost", retries=retries, retried=retried, retry_on=retry_on,
                                    retry_delay_base=retry_delay) \
            if lost >= max_attempts else None
        changes: dict[str, Any]
        if retry is not None:
            new = Status.START
            why = f"{why}; {retry.describe()}"
            changes = {"priority": RESTART_PRIORITY, "worker_id": None, "retried": retry.n,
                       "prune_requested": False,
                       "not_before": db_later(sa.literal(retry.delay, sa.Float()))}
        elif lost >= max_attempts:
            new = Status.ERR_RUN
            changes = {"error": why, "finished_at": db_now()}
        else:
            new = Status.START
            changes = {"priority": RESTART_PRIORITY, "worker_id": None,
                       "prune_requested": False}
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == Status.RUNNING)
            .values(status=new, losses=lost, updated_at=db_now(), **changes)
        )
        add_events(conn, "lost", [job_id], worker_id=by_worker, detail=f"{why}; now {new.name}")
        out.append(Rescued(job_id, worker_id, new))
    return out
