"""What the worker daemon needs from outside itself, named: the store calls it makes and the
run of one job. :class:`~dbdict_worker.store.Store` and
:class:`~dbdict_worker.job.jobrun.JobRun` are the real ones; a test may pass its own (a job
that ends when the test says so, for instance)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.db.connect import OutageWatcher, Target
from dbdict_worker.job.forkserver import ForkServer
from dbdict_worker.job.jobrun import RunResult
from dbdict_worker.job.process import JobSpec
from dbdict_worker.job.sync import Syncer
from dbdict_worker.store import Booking, Completion, Rescued, Token


@runtime_checkable
class QueueStore(Protocol):
    """Every store call the worker daemon makes."""

    #: Where the database is: the LISTEN connection's URL, the name in local workdir paths.
    target: Target

    def with_retry(self, seconds: float, *,
                   watcher: OutageWatcher | None = None) -> "QueueStore":
        """The same store, each call retrying for ``seconds`` and reporting to ``watcher``."""

    def register_worker(self, worker_id: str, host: str, pid: int, slots: int,
                        tables: Sequence[str] | None) -> list[str]:
        """Record the worker; returns those of its tables that do not exist yet."""

    def worker_beat(self, worker_id: str, state: str,
                    tokens: Sequence[Token]) -> tuple[bool, set[int], set[int]]:
        """Heartbeat of the worker and its jobs: (drain requested?, ids still owned, those
        of them a search's pruner ends)."""

    def set_worker_state(self, worker_id: str, state: str) -> None: ...

    def book(self, worker_id: str, host: str, *, tables: Sequence[str] | None = None,
             n: int = 1, missing_ok: bool = False,
             run_info: str | None = None) -> list[Booking]: ...

    def unbook(self, token: Token, reason: str) -> None:
        """Give back a job that never started, its attempt not counted (LostOwnership too)."""

    def save_state(self, token: Token, flat: Mapping[str, Any]) -> None:
        """Raises LostOwnership when the token no longer owns the job (so do the next two)."""

    def finish_many(self, done: Sequence[Completion]) -> list[int]:
        """End several owned jobs in one commit; returns the ids written (the others were
        no longer owned)."""

    def requeue_job(self, token: Token, *, priority: float = RESTART_PRIORITY,
                    state: Mapping[str, Any] | None = None, reason: str = "incomplete",
                    workdir: str | None = None, delay: float = 0.0,
                    restarts: int | None = None, retried: int | None = None,
                    event: str = "requeued") -> None: ...

    def next_due(self, *, tables: Sequence[str] | None = None) -> float | None:
        """Seconds until the first job waiting out a restart delay may be booked, or None."""

    def counts(self, **select: Any) -> dict[tuple[str, Status], int]:
        """Number of jobs per (table, status)."""

    def put_metrics(self, rows: Sequence[Any]) -> int:
        """Store reported metrics (``db.models.MetricRow`` rows) in one statement."""

    def put_log_tails(self, rows: Sequence[Any]) -> int:
        """Store the tails of running or ended attempts' output (``db.logs.LogTail`` rows)."""

    def requeue_stale(self, lease_seconds: float, *,
                      by_worker: str | None = None) -> list[Rescued]:
        """Requeue the jobs of workers that stopped heartbeating."""


class RunsJob(Protocol):
    """One job's run, as a slot drives it: ``run()`` blocks in the slot's thread until the job
    has ended; the other two may be called from any thread."""

    @property
    def abandoned(self) -> bool: ...

    def run(self) -> RunResult: ...

    def request_stop(self) -> None:
        """Stop the job (it gets its grace); a second call kills it."""

    def abandon(self) -> None:
        """Kill the job at once and push nothing: it is no longer ours."""

    # Optional (JobRun has them; a test's fake run may not): ``request_prune()``, a search's
    # pruner ends the job (PRUNED); ``take_metrics()``, the (step, key, value) reports since
    # the last call.


class JobRunFactory(Protocol):
    """Makes the run of a booked job (``JobRun`` is one); ``on_save`` is called in the thread
    that calls ``run()``, with each state the job saves."""

    def __call__(self, spec: JobSpec, *, syncer: Syncer | None, grace: float,
                 forkserver: ForkServer | None,
                 on_save: Callable[[dict[str, Any]], None]) -> RunsJob: ...
