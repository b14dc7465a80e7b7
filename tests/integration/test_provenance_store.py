"""Provenance through the library: a submission and a booking's run_info become reserved
``dbdict.*`` keys in records, the SQL view and every export, on PostgreSQL and SQLite."""
from __future__ import annotations

import csv
import io
import json

import sqlalchemy as sa

from dbdict_worker import export
from dbdict_worker.constants import Status
from dbdict_worker.records import PROVENANCE, RESERVED_KEYS

SUBMISSION = {"user": "ann", "host": "login1", "command": '["dbdict-enqueue", "pkg.exp", "x=1"]',
              "cwd": "/home/ann/proj", "git_repo": "/home/ann/proj", "git_commit": "a" * 40,
              "git_dirty": True, "git_diff_hash": "b" * 64}
RUN_INFO = json.dumps({"python": "3.11.7", "version": "0.1.0", "gpus": "NVIDIA A100, NVIDIA A100"})
EXPECTED = {"dbdict.user": "ann", "dbdict.enqueue_host": "login1",
            "dbdict.command": SUBMISSION["command"], "dbdict.cwd": "/home/ann/proj",
            "dbdict.git_repo": "/home/ann/proj", "dbdict.git_commit": "a" * 40,
            "dbdict.git_dirty": True, "dbdict.git_diff_hash": "b" * 64,
            "dbdict.python": "3.11.7", "dbdict.version": "0.1.0",
            "dbdict.gpus": "NVIDIA A100, NVIDIA A100"}
NONE = {k: None for k in EXPECTED}


def _fill(store) -> tuple[int, int]:
    """Job 1: with a submission, booked with run_info and DONE; job 2: neither (an enqueue
    from Python without a submission, not run yet)."""
    (with_prov,) = store.enqueue("pkg.exp", [{"x": 1}], submission=SUBMISSION).created
    (bare,) = store.enqueue("pkg.exp", [{"x": 2}]).created
    (b,) = store.book("w", "h", n=1, run_info=RUN_INFO)
    assert b.job.id == with_prov and b.job.run_info == RUN_INFO
    store.finish(b.token, Status.DONE, state=dict(b.state, y=2))
    return with_prov, bare


def _provenance(flat: dict) -> dict:
    return {r.key: flat.get(r.key) for r in PROVENANCE}


def test_records_and_json_export_carry_provenance(store):
    one, two = _fill(store)
    job, state = store.job(one)
    assert job.submission is not None and job.submission.git_dirty is True
    listed = {j.id: (j, s) for j, s in store.jobs_with_state()}
    from dbdict_worker.records import full_state

    assert _provenance(full_state(*listed[one])) == EXPECTED
    assert _provenance(full_state(*listed[two])) == NONE
    buf = io.StringIO()
    assert store.export(buf, fmt="json") == 2
    rows = {r["dbdict.id"]: r for r in json.loads(buf.getvalue())}
    assert _provenance(rows[one]) == EXPECTED and _provenance(rows[two]) == NONE
    # New keys come after the old ones: existing column positions do not move.
    assert list(rows[one])[len(state):][:14] == list(RESERVED_KEYS[:14])


def test_view_has_provenance_columns(store):
    one, two = _fill(store)
    columns = store.create_view("v")
    assert columns[: len(RESERVED_KEYS)] == list(RESERVED_KEYS)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text(
            'SELECT "dbdict.id", "dbdict.git_commit", "dbdict.git_dirty", "dbdict.python", '
            '"dbdict.gpus", "dbdict.user" FROM v ORDER BY "dbdict.id"')).all()
    assert [tuple(r) for r in rows] == [
        (one, "a" * 40, True, "3.11.7", "NVIDIA A100, NVIDIA A100", "ann"),
        (two, None, None, None, None, None)]


def test_csv_export_spells_provenance_like_python(store):
    one, _ = _fill(store)
    buf = io.StringIO()
    store.export(buf, fmt="csv")  # COPY on PostgreSQL, csv.writer on SQLite
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert rows[0]["dbdict.git_dirty"] == "True" and rows[0]["dbdict.python"] == "3.11.7"
    assert rows[0]["dbdict.command"] == SUBMISSION["command"]
    assert rows[1]["dbdict.git_dirty"] == "" and rows[1]["dbdict.user"] == ""


def test_postgres_copy_equals_python_writer_with_provenance(pg_store):
    _fill(pg_store)
    pg_store.enqueue("pkg.exp", [{"x": 3}], submission=dict(SUBMISSION, git_dirty=False,
                                                             git_diff_hash=None))
    by_copy = io.StringIO()
    pg_store.export(by_copy, fmt="csv")
    by_python = io.StringIO()
    export.write_csv(by_python, {"x", "y"}, pg_store.jobs_with_state())
    assert list(csv.reader(io.StringIO(by_copy.getvalue()))) == \
        list(csv.reader(io.StringIO(by_python.getvalue())))
    assert "False" in by_copy.getvalue()


def test_each_booking_records_its_own_run_info(store):
    (job_id,) = store.enqueue("pkg.exp", [{"x": 1}]).created
    (b,) = store.book("w1", "h1", n=1, run_info='{"python": "3.10.0"}')
    store.requeue_job(b.token)
    (b,) = store.book("w2", "h2", n=1, run_info='{"python": "3.12.1"}')
    job, _ = store.job(job_id)
    from dbdict_worker.records import reserved

    assert reserved(job)["dbdict.python"] == "3.12.1" and reserved(job)["dbdict.host"] == "h2"
