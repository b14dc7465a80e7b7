"""The :class:`~dbdict_worker.store.Store` calls of the queue core, used by workers: booking,
saving a booked job's state, finishing (one job or a batch in one commit), requeueing,
heartbeats. Every write for a booked job is conditional on its fencing token."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from dbdict_worker import state as statemod
from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.db import queries, queue
from dbdict_worker.db import workers as workerq
from dbdict_worker.db.connect import Connection
from dbdict_worker.db.models import Booking, Completion, Token
from dbdict_worker.errors import LostOwnership


class QueueCalls:
    """Mixed into Store (which provides the connections, the retries and the table lookups)."""

    transaction: Callable[[Callable[[Connection], Any]], Any]
    _statement: Callable[[Callable[[Connection], Any]], Any]
    _booking_tables: dict[tuple[str, ...] | None, tuple[int, ...] | None]
    _tables_arg: Callable[..., list[str] | None]
    _table_ids: Callable[..., tuple[int, ...] | None]
    _existing_table_ids: Callable[..., tuple[int, ...] | None]

    def next_due(self, *, tables: Sequence[str] | None = None) -> float | None:
        """Seconds until the first job waiting out a restart delay (in ``tables``) may be
        booked, by the database clock; None when no job waits."""
        names = self._tables_arg(tables)

        def run(conn: Connection) -> float | None:
            ids = None if names is None else tuple(queries.table_ids(conn, names).values())
            return queue.next_due(conn, ids)
        return self.transaction(run)

    def book(self, worker_id: str, host: str, *, tables: Sequence[str] | None = None,
             n: int = 1, missing_ok: bool = False,
             run_info: str | None = None) -> list[Booking]:
        """Book up to ``n`` ready jobs (priority DESC, id ASC) in one statement. A table that
        does not exist is NotFound, or with ``missing_ok`` has nothing to book yet.
        ``run_info``: this attempt's provenance (``provenance.run_info_json()``)."""
        names = self._tables_arg(tables)

        def run(conn: Connection) -> list[Booking]:
            ids = self._booking_table_ids(conn, names, missing_ok)
            if ids == ():
                return []
            booked = queue.book(conn, worker_id=worker_id, host=host, table_ids=ids, n=n,
                                run_info=run_info)
            return _bookings(worker_id, booked)
        return self._statement(run)

    def _booking_table_ids(self, conn: Connection, names: list[str] | None,
                           missing_ok: bool) -> tuple[int, ...] | None:
        # Table ids never change: look them up once per store, not once per booking (but
        # again while some do not exist yet, until they all do).
        key = tuple(names) if names is not None else None
        ids = self._booking_tables.get(key, ())
        if key not in self._booking_tables:
            ids = self._existing_table_ids(conn, names) if missing_ok \
                else self._table_ids(conn, names)
            if ids is None or names is None or len(ids) == len(names):
                self._booking_tables[key] = ids
        return ids

    def finish_and_book(self, done: Sequence[Completion], host: str, *,
                        tables: Sequence[str] | None = None, n: int = 1,
                        missing_ok: bool = False,
                        run_info: str | None = None) -> tuple[list[int], list[Booking]]:
        """:meth:`finish_many` then :meth:`book` (for the same worker) in one statement and
        one commit on PostgreSQL, for the ends of jobs that carry no new state: a consumer
        whose claimed jobs have all ended makes one round trip for their ends and its next
        claim. Returns the ids written and the new bookings."""
        if not done:
            raise ValueError("finish_and_book() takes at least one completion (else book())")
        items, worker = self._completions(done)
        if any(c.state is not None for c, _ in items):
            raise ValueError("finish_and_book() takes completions without a state")
        names = self._tables_arg(tables)

        def run(conn: Connection) -> tuple[list[int], list[Booking]]:
            ids = self._booking_table_ids(conn, names, missing_ok)
            if ids == ():
                return queue.finish_owned_many(conn, worker, items), []
            written, booked = queue.finish_and_book(
                conn, worker_id=worker, host=host, table_ids=ids, n=n, run_info=run_info,
                done=items)
            return written, _bookings(worker, booked)
        return self._statement(run)

    def _owned_write(self, token: Token, what: str,
                     fn: Callable[[Connection], bool]) -> None:
        if not self.transaction(fn):
            raise LostOwnership(
                f"job {token.job_id}: cannot {what}, worker {token.worker_id} attempt "
                f"{token.attempt} no longer owns it")

    def save_state(self, token: Token, flat: Mapping[str, Any]) -> None:
        """Replace the job's state (reserved ``dbdict.*`` keys are ignored); LostOwnership if
        the token no longer owns the job."""
        clean = user_state(flat)

        def run(conn: Connection) -> bool:
            if not queue.touch_owned(conn, token):
                return False
            queue.replace_state(conn, token.job_id, clean)
            return True
        self._owned_write(token, "save state", run)

    def finish(self, token: Token, status: Status, *, state: Mapping[str, Any] | None = None,
               error: str | None = None, workdir: str | None = None) -> None:
        """Record the job's final status (and final state); LostOwnership if not owned."""
        if not self.finish_many([Completion(token, status, state, error, workdir)]):
            raise LostOwnership(
                f"job {token.job_id}: cannot finish as {status.name}, worker "
                f"{token.worker_id} attempt {token.attempt} no longer owns it")

    def finish_many(self, done: Sequence[Completion]) -> list[int]:
        """Record several booked jobs' final statuses (and final states), all of one worker,
        in one transaction: one durable commit for the batch instead of one per job (a
        worker whose slots end together, a consumer of short jobs). Returns the ids written;
        the others were no longer owned and nothing was written for them.

        A result counts as written only once this returns. If the worker dies before the
        commit, its jobs stay RUNNING and come back by lease, like a job it was running."""
        if not done:
            return []
        items, worker = self._completions(done)

        def run(conn: Connection) -> list[int]:
            return queue.finish_owned_many(conn, worker, items)
        # With states it is a DELETE and a COPY more: then one transaction.
        if any(c.state is not None for c, _ in items):
            return self.transaction(run)
        return self._statement(run)

    @staticmethod
    def _completions(done: Sequence[Completion]) -> tuple[list[tuple[Completion, str]], str]:
        """Checked completions, each with its event's detail, and their one worker."""
        workers = {c.token.worker_id for c in done}
        if len(workers) != 1:
            raise ValueError("finish_many() takes the jobs of one worker")
        if len({c.token.job_id for c in done}) != len(done):
            raise ValueError("finish_many() takes each job once")
        items = []
        for c in done:
            if c.status in (Status.START, Status.RUNNING):
                raise ValueError("finish() takes a final status; use requeue_job() for START")
            if c.state is not None:
                c = dataclasses.replace(c, state=user_state(c.state))
            items.append((c, _release_detail(c.status, None, c.error, 0.0)))
        (worker,) = workers
        return items, worker

    def requeue_job(self, token: Token, *, priority: float = RESTART_PRIORITY,
                    state: Mapping[str, Any] | None = None, reason: str = "incomplete",
                    workdir: str | None = None, delay: float = 0.0,
                    restarts: int | None = None, retried: int | None = None,
                    event: str = "requeued") -> None:
        """Give an owned job back to the queue (INCOMPLETE, stopped or retried), at
        ``priority``, bookable ``delay`` seconds from now (database clock), its count of
        INCOMPLETE returns without progress set to ``restarts`` and of retries used to
        ``retried`` (None keeps them); ``event`` is the kind of its history event."""
        clean = user_state(state) if state is not None else None
        detail = _release_detail(Status.START, reason, None, delay)

        def run(conn: Connection) -> bool:
            # Ownership first (the row stays locked to the end of the transaction), then the
            # state, so a lost job's state is never touched.
            if not queue.release_owned(conn, token, Status.START, priority=priority, error=None,
                                       workdir=workdir, event=(event, detail), delay=delay,
                                       restarts=restarts, retried=retried):
                return False
            if clean is not None:
                queue.replace_state(conn, token.job_id, clean)
            workerq.notify(conn, workerq.JOBS_CHANNEL)
            return True
        self._owned_write(token, "requeue", run)

    def unbook(self, token: Token, reason: str) -> None:
        """Give back a booked job that never started because the worker's own environment
        failed (not the job's fault): START again, its attempt not counted, an ``unbooked``
        event with ``reason``; LostOwnership if not owned."""
        def run(conn: Connection) -> bool:
            if not queue.unbook_owned(conn, token, reason):
                return False
            workerq.notify(conn, workerq.JOBS_CHANNEL)
            return True
        self._owned_write(token, "unbook", run)

    def heartbeat(self, worker_id: str, tokens: Sequence[Token]) -> set[int]:
        """Refresh the jobs' heartbeats; returns the ids still owned."""
        return set(self._statement(lambda c: queue.heartbeat(c, worker_id, tokens)))


def _bookings(worker_id: str, booked: Sequence[tuple[Any, dict[str, Any]]]) -> list[Booking]:
    return [Booking(j, Token(j.id, worker_id, j.attempts), st) for j, st in booked]


def _release_detail(status: Status, reason: str | None, error: str | None,
                    delay: float) -> str:
    """The detail of a release's history event: the new status, why, the error, the delay."""
    detail = status.name if reason is None else f"{status.name}: {reason}"
    if error:
        detail += f": {error}"
    if delay > 0:
        detail += f"; not before now + {delay:.3g} s"
    return detail


def user_state(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A state to store: checked, flattened, without the reserved ``dbdict.*`` keys."""
    return statemod.flatten(statemod.user_keys(flat))
