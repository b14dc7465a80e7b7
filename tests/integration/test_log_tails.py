"""The kept output tails: the store's job_logs round trip on PostgreSQL and SQLite, and the
worker's LogShip reading a real job's files live and at the end."""
from __future__ import annotations

import itertools
import threading

from dbdict_worker.db.logs import LogTail
from dbdict_worker.job.jobrun import JobRun
from dbdict_worker.job.process import JobSpec
from dbdict_worker.worker.logship import LogShip
from dbdict_worker.worker.writes import Outage
from tests.support.waiting import wait_for

CODE = '''
import os, time

def hello(state, channel):
    print("hello", flush=True)
    while not os.path.exists("go"):   # the test says when to end
        time.sleep(0.02)
    print("bye", flush=True)
'''


def test_tails_round_trip_by_attempt_and_stream(store):
    (job_id,) = store.enqueue("x.y", [{"a": 1}]).created
    assert store.log_tails(job_id) == []
    store.put_log_tails([LogTail(job_id, 1, "stdout", "one\n", 4),
                         LogTail(job_id, 1, "stderr", "oops\n", 5),
                         LogTail(job_id, 2, "stdout", "two é\n", 7)])
    latest = store.log_tails(job_id)
    assert [(r.attempt, r.stream, r.tail, r.size) for r in latest] == [(2, "stdout", "two é\n", 7)]
    assert latest[0].updated_at is not None and latest[0].updated_at.tzinfo is not None
    first = store.log_tails(job_id, 1)
    assert [(r.stream, r.tail, r.size) for r in first] == [("stdout", "one\n", 4),
                                                           ("stderr", "oops\n", 5)]


def test_an_upsert_replaces_a_tail_but_never_with_an_older_one(store):
    (job_id,) = store.enqueue("x.y", [{"a": 1}]).created
    store.put_log_tails([LogTail(job_id, 1, "stdout", "a\n", 2)])
    store.put_log_tails([LogTail(job_id, 1, "stdout", "a\nb\n", 4)])
    store.put_log_tails([LogTail(job_id, 1, "stdout", "a\n", 2)])  # a late retry
    (row,) = store.log_tails(job_id, 1)
    assert (row.tail, row.size) == ("a\nb\n", 4)


def test_tails_of_a_deleted_job_go_with_it_and_never_come_back(store):
    ids = store.enqueue("x.y", [{"a": 1}, {"a": 2}]).created
    store.put_log_tails([LogTail(i, 1, "stdout", f"job {i}\n", 6) for i in ids])
    store.delete(ids=[ids[0]])
    assert store.log_tails(ids[0]) == []
    assert store.log_tails(ids[1])[0].tail == f"job {ids[1]}\n"
    # The worker of a job deleted while it ran writes its final tail: nothing is kept.
    assert store.put_log_tails([LogTail(ids[0], 1, "stdout", "late\n", 5)]) == 0
    assert store.log_tails(ids[0]) == []


def test_logship_ships_a_running_jobs_tail_then_its_final_one(store, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "logexp_hello.py").write_text(CODE)
    (job_id,) = store.enqueue("logexp_hello.hello", [{}]).created
    workdir = tmp_path / "wd"
    workdir.mkdir()
    (workdir / "stdout").write_text("an earlier attempt's output\n")
    run = JobRun(JobSpec("logexp_hello.hello", {}, workdir=workdir, python_path=[str(code)]))
    ticks = itertools.count(step=100)  # every flush is past the rate limit
    ship = LogShip(store, Outage(), limit=1000, interval=1.0, clock=lambda: next(ticks))
    ship.track(job_id, 3, run)
    ship.flush()  # not started yet: nothing to read, nothing written
    thread = threading.Thread(target=run.run)
    thread.start()
    try:
        wait_for(lambda: (workdir / "stdout").read_text().endswith("hello\n"),
                 what="the job's first line")
        ship.flush()
        (live,) = store.log_tails(job_id, 3)
        assert (live.stream, live.tail, live.size) == ("stdout", "hello\n", 6)
    finally:
        (workdir / "go").touch()
        thread.join(30)
    ship.finish(job_id)
    (final,) = store.log_tails(job_id, 3)
    assert (final.tail, final.size) == ("hello\nbye\n", 10)
    # The whole output, earlier attempts' included, stays in the workdir.
    assert (workdir / "stdout").read_text() == "an earlier attempt's output\nhello\nbye\n"


def test_logship_with_capture_off_writes_nothing(store, tmp_path):
    (job_id,) = store.enqueue("dbdict_worker.examples.add", [{"first": 1, "second": 2}]).created
    run = JobRun(JobSpec("dbdict_worker.examples.add", {"first": 1, "second": 2},
                         workdir=tmp_path / "wd"))
    ship = LogShip(store, Outage(), limit=0, interval=1.0)
    ship.track(job_id, 1, run)
    assert run.run().outcome.complete
    ship.flush()
    ship.finish(job_id)
    assert (tmp_path / "wd" / "stdout").read_text() == "1 + 2 = 3\n"
    assert store.log_tails(job_id) == []
