"""How a job looks to users: the reserved ``dbdict.*`` keys and the JSON record.

The same reserved keys appear in ``state.dbdict`` for the experiment, in ``dbdict list --json``
and ``show --json``, as columns of ``dbdict view`` and in ``dbdict export``.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # the experiment side uses these helpers without loading SQLAlchemy
    from dbdict_worker.db.queries import Job

#: The reserved keys, in the order exports and views show them.
RESERVED_KEYS = (
    "dbdict.id",
    "dbdict.table",
    "dbdict.experiment",
    "dbdict.status",
    "dbdict.priority",
    "dbdict.attempts",
    "dbdict.replica",
    "dbdict.host",
    "dbdict.worker",
    "dbdict.workdir",
    "dbdict.error",
    "dbdict.created",
    "dbdict.booked",
    "dbdict.finished",
)


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def reserved(job: Job) -> dict[str, Any]:
    """The job's reserved ``dbdict.*`` keys (status by name, times as ISO 8601 UTC)."""
    return {
        "dbdict.id": job.id,
        "dbdict.table": job.table,
        "dbdict.experiment": job.experiment,
        "dbdict.status": job.status.name,
        "dbdict.priority": job.priority,
        "dbdict.attempts": job.attempts,
        "dbdict.replica": job.replica,
        "dbdict.host": job.host,
        "dbdict.worker": job.worker_id,
        "dbdict.workdir": job.workdir,
        "dbdict.error": job.error,
        "dbdict.created": _iso(job.created_at),
        "dbdict.booked": _iso(job.booked_at),
        "dbdict.finished": _iso(job.finished_at),
    }


def full_state(job: Job, state: Mapping[str, Any]) -> dict[str, Any]:
    """The user's keys (sorted) followed by the reserved ones."""
    out = {k: state[k] for k in sorted(state)}
    out.update(reserved(job))
    return out


def job_record(job: Job, state: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of ``list --json`` and ``show --json`` (SPEC section 5)."""
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
