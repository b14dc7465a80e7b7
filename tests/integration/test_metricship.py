"""The worker's MetricShip with a real job process and a real PostgreSQL (through a TCP
forwarder the test cuts): a job's reports are written in batches while it runs and in full
at its end; while the database is away they are kept (bounded) and written once it is back."""
from __future__ import annotations

import itertools
import threading

import pytest

from dbdict_worker.db.models import MetricRow
from dbdict_worker.job.jobrun import JobRun
from dbdict_worker.job.process import JobSpec
from dbdict_worker.store import Store
from dbdict_worker.worker.metricship import MetricShip
from dbdict_worker.worker.writes import Outage
from tests.support.proxy import Proxy
from tests.support.waiting import wait_for

CODE = '''
import os, time

def steps(state, channel):
    step = 0
    while not os.path.exists("go"):   # the test says when to end
        step += 1
        channel.report(step, loss=1.0 / step)
        time.sleep(0.005)
    channel.report(step + 1, loss=0.0)
'''


class FakeRun:
    """A run whose reports the test hands over (MetricShip only calls take_metrics)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, float]] = []

    def take_metrics(self) -> list[tuple[int, str, float]]:
        rows, self.rows = self.rows, []
        return rows


@pytest.fixture
def proxy(pg_url):
    p = Proxy(pg_url)
    yield p
    p.close()


def test_a_running_jobs_reports_go_in_batches_and_its_last_ones_at_its_end(pg_store, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "mship.py").write_text(CODE)
    (job_id,) = pg_store.enqueue("mship.steps", [{}]).created
    workdir = tmp_path / "wd"
    run = JobRun(JobSpec("mship.steps", {}, workdir=workdir, python_path=[str(code)],
                         report_interval=0.05))
    ticks = itertools.count(step=100)  # every flush is past the interval
    ship = MetricShip(pg_store, Outage(), interval=1.0, clock=lambda: next(ticks))
    ship.track(job_id, 2, run)
    ship.flush()  # not started yet: nothing taken, nothing written
    assert ship.statements == 0
    thread = threading.Thread(target=run.run)
    thread.start()
    try:
        wait_for(lambda: ship.flush() or pg_store.metric_rows([job_id]), 20,
                 "reports written while the job runs")
        live = pg_store.metric_rows([job_id])
        assert {(r.attempt, r.key) for r in live} == {(2, "loss")}
    finally:
        (workdir / "go").touch()
        thread.join(30)
    assert run.process.outcome.complete
    ship.finish(job_id)
    rows = pg_store.metric_rows([job_id])
    steps = [r.step for r in rows]
    assert steps == sorted(steps) and rows[-1].value == 0.0  # the last report is in
    assert ship.pending == 0 and ship.statements >= 2


def test_reports_wait_out_an_outage_bounded_and_are_written_after_it(pg_store, proxy):
    (job_id,) = pg_store.enqueue("x.y", [{}]).created
    store = Store.open(proxy.url, retry_seconds=0.2)
    try:
        outage = Outage()
        ship = MetricShip(store, outage, interval=0.0, max_pending=50)
        run = FakeRun()
        ship.track(job_id, 1, run)
        proxy.cut()
        run.rows = [(s, "loss", float(s)) for s in range(40)]
        ship.flush()
        assert outage.down and ship.pending == 40
        run.rows = [(s, "loss", float(s)) for s in range(40, 70)]
        ship.flush(force=True)
        outage.retry_now()
        ship.flush()
        assert ship.pending == 50 and ship.dropped == 20  # the oldest went first
        proxy.restore()
        outage.retry_now()
        ship.finish(job_id)
        assert ship.pending == 0 and not outage.down
        assert [r.step for r in pg_store.metric_rows([job_id])] == list(range(20, 70))
    finally:
        store.close()


def test_rows_of_a_deleted_job_are_dropped_not_retried(pg_store):
    a, b = pg_store.enqueue("x.y", [{"i": 1}, {"i": 2}]).created
    pg_store.delete(ids=[a])
    ship = MetricShip(pg_store, Outage(), interval=0.0)
    for job_id in (a, b):
        run = FakeRun()
        run.rows = [(1, "loss", 1.0)]
        ship.track(job_id, 1, run)
    ship.flush()
    assert ship.pending == 0 and ship.rows == 1
    assert pg_store.metric_rows([a, b]) == [MetricRow(b, 1, 1, "loss", 1.0,
                                                      pg_store.metric_rows([b])[0].at)]
