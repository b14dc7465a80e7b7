"""How a job looks to users: the reserved ``dbdict.*`` keys and the JSON record.

The same reserved keys appear in ``state.dbdict`` for the experiment, in ``dbdict list --json``
and ``show --json``, as columns of ``dbdict view`` and in ``dbdict export``: all of them come
from the one table :data:`RESERVED`.
"""
from __future__ import annotations

import functools
import json
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
#: A boolean; a CSV export spells it True or False.
BOOL = "bool"

# Where a reserved key's value lives (``ReservedKey.source``).
#: An attribute of the :class:`Job` (a ``jobs`` column).
JOB = "job"
#: A column of the job's ``submissions`` row (``Job.submission``): the enqueue's provenance.
SUBMISSION = "submission"
#: A key of the JSON object in ``jobs.run_info``: the latest attempt's facts.
RUN = "run"


@dataclass(frozen=True)
class ReservedKey:
    """One reserved key: ``dbdict.<name>``, the :class:`Job` attribute holding it (also the
    name of its ``jobs`` column, but for :data:`TABLE`), and how it is shown (``kind``).
    From another ``source``, ``attr`` names a ``submissions`` column or a run_info key."""

    name: str
    attr: str
    kind: str = TEXT
    source: str = JOB

    @property
    def key(self) -> str:
        return f"{RESERVED_PREFIX}.{self.name}"

    def value(self, job: Job) -> Any:
        """The key's value for ``job``, as JSON and ``state.dbdict`` show it."""
        if self.source == SUBMISSION:
            value = getattr(job.submission, self.attr, None)
        elif self.source == RUN:
            value = run_facts(job.run_info).get(self.attr)
        else:
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
    # Provenance (provenance.py): of the enqueue, then of the latest attempt.
    ReservedKey("user", "user", TEXT, SUBMISSION),
    ReservedKey("enqueue_host", "host", TEXT, SUBMISSION),
    ReservedKey("command", "command", TEXT, SUBMISSION),
    ReservedKey("cwd", "cwd", TEXT, SUBMISSION),
    ReservedKey("git_repo", "git_repo", TEXT, SUBMISSION),
    ReservedKey("git_commit", "git_commit", TEXT, SUBMISSION),
    ReservedKey("git_dirty", "git_dirty", BOOL, SUBMISSION),
    ReservedKey("git_diff_hash", "git_diff_hash", TEXT, SUBMISSION),
    ReservedKey("python", "python", TEXT, RUN),
    ReservedKey("version", "version", TEXT, RUN),
    ReservedKey("gpus", "gpus", TEXT, RUN),
)
#: Their keys (``dbdict.id``, ...), in the same order.
RESERVED_KEYS = tuple(r.key for r in RESERVED)
#: The provenance keys (not the job's own columns), in the same order.
PROVENANCE = tuple(r for r in RESERVED if r.source != JOB)


@functools.lru_cache(maxsize=256)
def run_facts(text: str | None) -> Mapping[str, Any]:
    """The JSON object of ``jobs.run_info`` (empty if none or unreadable). Cached, since a
    worker's jobs share one text: do not modify the result."""
    try:
        facts = json.loads(text) if text else {}
    except ValueError:
        return {}
    return facts if isinstance(facts, dict) else {}


def reserved(job: Job, *, provenance: bool = True) -> dict[str, Any]:
    """The job's reserved ``dbdict.*`` keys (status by name, times as ISO 8601 UTC); without
    ``provenance`` only the job's own, those the experiment's ``state.dbdict`` holds."""
    return {r.key: r.value(job) for r in RESERVED if provenance or r.source == JOB}


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
