"""The reserved ``dbdict.*`` keys: one table (records.RESERVED) behind every place they show."""
from __future__ import annotations

import dataclasses
import datetime as dt

from dbdict_worker.constants import Status
from dbdict_worker.db.models import Job, Submission
from dbdict_worker.records import (JOB, PROVENANCE, RESERVED, RESERVED_KEYS, SUBMISSION,
                                reserved)

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
    own = [r for r in RESERVED if r.source == JOB]
    assert [r.attr for r in own if r.attr not in fields] == []
    submission_fields = {f.name for f in dataclasses.fields(Submission)}
    assert [r.attr for r in RESERVED
            if r.source == SUBMISSION and r.attr not in submission_fields] == []
    assert RESERVED_KEYS == tuple(f"dbdict.{r.name}" for r in RESERVED)
    assert len(set(RESERVED_KEYS)) == len(RESERVED_KEYS) == 25
    # Provenance keys come after the job's own: the first 14 columns keep their places.
    assert RESERVED[:14] == tuple(own) and set(RESERVED[14:]) == set(PROVENANCE)


def test_reserved_shows_status_by_name_and_times_as_iso_utc():
    assert reserved(_job(), provenance=False) == {
        "dbdict.id": 7, "dbdict.table": "t", "dbdict.experiment": "pkg.exp",
        "dbdict.status": "ERR_RUN", "dbdict.priority": 2.0, "dbdict.attempts": 1,
        "dbdict.replica": 0, "dbdict.host": "h", "dbdict.worker": "w1", "dbdict.workdir": "/w",
        "dbdict.error": "boom", "dbdict.created": "2026-01-02T03:04:05.600000+00:00",
        "dbdict.booked": "2026-01-02T03:04:05.600000+00:00", "dbdict.finished": None,
    }
    assert list(reserved(_job())) == list(RESERVED_KEYS)


def test_provenance_keys_read_the_submission_and_the_run_info():
    sub = Submission(id=3, created_at=None, user="ann", host="login1",
                     command='["dbdict-enqueue", "pkg.exp", "lr=0.1"]', cwd="/home/ann/p",
                     git_repo="/home/ann/p", git_commit="abc123", git_dirty=True,
                     git_diff_hash="f" * 64)
    job = _job(submission_id=3, submission=sub,
               run_info='{"python": "3.11.7", "version": "0.1.0", "gpus": "NVIDIA A100"}')
    got = reserved(job)
    assert {k: got[k] for k in (r.key for r in PROVENANCE)} == {
        "dbdict.user": "ann", "dbdict.enqueue_host": "login1",
        "dbdict.command": '["dbdict-enqueue", "pkg.exp", "lr=0.1"]', "dbdict.cwd": "/home/ann/p",
        "dbdict.git_repo": "/home/ann/p", "dbdict.git_commit": "abc123",
        "dbdict.git_dirty": True, "dbdict.git_diff_hash": "f" * 64,
        "dbdict.python": "3.11.7", "dbdict.version": "0.1.0", "dbdict.gpus": "NVIDIA A100",
    }
    # Without a submission or run_info (older jobs, an enqueue from Python): all None.
    assert {reserved(_job(run_info="not json"))[r.key] for r in PROVENANCE} == {None}
    # The experiment's state.dbdict keeps the job's own keys only.
    assert not set(reserved(job, provenance=False)) & {r.key for r in PROVENANCE}
