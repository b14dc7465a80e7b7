"""How a job looks to users: the reserved ``dbdict.*`` keys and the JSON record.

The same reserved keys appear in ``state.dbdict`` for the experiment, in ``dbdict list --json``
and ``show --json``, as columns of ``dbdict view`` and in ``dbdict export``: all of them come
from the one table :data:`RESERVED`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from dbdict_worker.constants import RESERVED_PREFIX

if TYPE_CHECKING:  # the experiment side uses these helpers without loading SQLAlchemy
    from dbdict_worker.db.models import Job

# How a reserved value is shown (in JSON, and as a column of the view and of a CSV export).
#: A string, as it is.
TEXT = "text"
#: An integer; a CSV export spells it in decimal.
INT = "int"
#: A float; a CSV export spells it as Python's repr does (2.0, not 2).
FLOAT = "float"
#: A time: ISO 8601 UTC text (``datetime.isoformat()``).
TIME = "time"
#: A :class:`~dbdict_worker.constants.Status`, shown by its name.
STATUS = "status"
#: The name of the job's table (``Job.table``; in SQL, ``job_tables.name``).
TABLE = "table"


@dataclass(frozen=True)
class ReservedKey:
    """One reserved key: ``dbdict.<name>``, the :class:`Job` attribute holding it (also the
    name of its ``jobs`` column, but for :data:`TABLE`), and how it is shown (``kind``)."""

    name: str
    attr: str
    kind: str = TEXT

    @property
    def key(self) -> str:
        return f"{RESERVED_PREFIX}.{self.name}"

    def value(self, job: Job) -> Any:
        """The key's value for ``job``, as JSON and ``state.dbdict`` show it."""
        value = getattr(job, self.attr)
        if self.kind == STATUS:
            return value.name
        if self.kind == TIME:
            return value.isoformat() if value is not None else None
        return value


#: The reserved keys, in the order exports and views show them.
RESERVED: tuple[ReservedKey, ...] = (
    ReservedKey("id", "id", INT),
    ReservedKey("table", "table", TABLE),
    ReservedKey("experiment", "experiment"),
    ReservedKey("status", "status", STATUS),
    ReservedKey("priority", "priority", FLOAT),
    ReservedKey("attempts", "attempts", INT),
    ReservedKey("replica", "replica", INT),
    ReservedKey("host", "host"),
    ReservedKey("worker", "worker_id"),
    ReservedKey("workdir", "workdir"),
    ReservedKey("error", "error"),
    ReservedKey("created", "created_at", TIME),
    ReservedKey("booked", "booked_at", TIME),
    ReservedKey("finished", "finished_at", TIME),
)
#: Their keys (``dbdict.id``, ...), in the same order.
RESERVED_KEYS = tuple(r.key for r in RESERVED)


def reserved(job: Job) -> dict[str, Any]:
    """The job's reserved ``dbdict.*`` keys (status by name, times as ISO 8601 UTC)."""
    return {r.key: r.value(job) for r in RESERVED}


def full_state(job: Job, state: Mapping[str, Any]) -> dict[str, Any]:
    """The user's keys (sorted) followed by the reserved ones."""
    out = {k: state[k] for k in sorted(state)}
    out.update(reserved(job))
    return out


def job_record(job: Job, state: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of ``list --json`` and ``show --json``."""
    return {
        "id": job.id,
        "table": job.table,
        "experiment": job.experiment,
        "status": job.status.name,
        "priority": job.priority,
        "attempts": job.attempts,
        "host": job.host,
        "workdir": job.workdir,
        "error": job.error,
        "state": full_state(job, state),
    }
