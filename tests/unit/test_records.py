"""The reserved ``dbdict.*`` keys: one table (records.RESERVED) behind every place they show."""
from __future__ import annotations

import dataclasses
import datetime as dt

from dbdict_worker.constants import Status
from dbdict_worker.db.models import Job
from dbdict_worker.records import RESERVED, RESERVED_KEYS, reserved

UTC = dt.timezone.utc


def _job(**changes) -> Job:
    t = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    job = Job(id=7, table="t", experiment="pkg.exp", status=Status.ERR_RUN, priority=2.0,
              attempts=1, losses=0, max_attempts=3, replica=0, created_at=t, updated_at=t,
              booked_at=t, heartbeat_at=t, finished_at=None, worker_id="w1", host="h",
              workdir="/w", error="boom")
    return dataclasses.replace(job, **changes)


def test_every_reserved_key_names_a_job_attribute():
    fields = {f.name for f in dataclasses.fields(Job)}
    assert [r.attr for r in RESERVED if r.attr not in fields] == []
    assert RESERVED_KEYS == tuple(f"dbdict.{r.name}" for r in RESERVED)
    assert len(set(RESERVED_KEYS)) == len(RESERVED_KEYS) == 14


def test_reserved_shows_status_by_name_and_times_as_iso_utc():
    assert reserved(_job()) == {
        "dbdict.id": 7, "dbdict.table": "t", "dbdict.experiment": "pkg.exp",
        "dbdict.status": "ERR_RUN", "dbdict.priority": 2.0, "dbdict.attempts": 1,
        "dbdict.replica": 0, "dbdict.host": "h", "dbdict.worker": "w1", "dbdict.workdir": "/w",
        "dbdict.error": "boom", "dbdict.created": "2026-01-02T03:04:05.600000+00:00",
        "dbdict.booked": "2026-01-02T03:04:05.600000+00:00", "dbdict.finished": None,
    }
    assert list(reserved(_job())) == list(RESERVED_KEYS)
