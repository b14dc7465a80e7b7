"""The fleet simulation, small: 40 simulated workers on the suite's PostgreSQL, directly and
through pgbouncer in transaction mode (``python -m tests.soak.fleet`` runs the 1,000-worker
one). Correctness only, never timing: every job DONE exactly once, no rescue of a live
worker's job, no lost heartbeat, and through pgbouncer no more server connections than its
pool."""
from __future__ import annotations

import os

import pytest

from tests.soak.fleet import PGBOUNCER, FleetConfig, run_fleet, summary
from tests.support.needs import missing


def _config(pg_server, *, pgbouncer: bool) -> FleetConfig:
    _engine, url, _template = pg_server
    # Heartbeat and lease scaled down in the worker's ratio (10 s, 60 s) so that a short run
    # makes many heartbeats and rescue sweeps.
    return FleetConfig(workers=40, procs=2, duration=10.0, ramp=2.0, job_min=0.5, job_max=1.5,
                       heartbeat=1.0, lease=6.0, poll_interval=1.0, pgbouncer=pgbouncer,
                       pool_size=8, db=url.render_as_string(hide_password=False), seed=14)


def _check(report, cfg: FleetConfig) -> None:
    text = summary(report)
    print(text)
    assert report.ok, text
    assert report.finishes > 0 and report.bookings >= report.finishes, text
    assert report.statuses.get("DONE") == report.finishes, text
    assert set(report.statuses) <= {"DONE", "START"}, text
    assert (report.rescues, report.lost_events, report.lost_beats) == (0, 0, 0), text
    assert report.beats >= cfg.workers, text
    # Each worker's pool held one connection at a time: its calls come from one thread.
    assert max(int(k) for k in report.conns_per_worker) <= 1, text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_fleet_direct(pg_server):
    """40 workers, each with its own store, straight to the server."""
    cfg = _config(pg_server, pgbouncer=False)
    report = run_fleet(cfg, say=print)
    _check(report, cfg)
    assert report.server_conns_max <= cfg.workers, summary(report)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_fleet_through_pgbouncer(pg_server):
    """The same through pgbouncer (transaction pooling, 8 server connections): the workers
    work, and the server never sees more connections than the pool."""
    if not os.path.exists(PGBOUNCER):
        missing(f"pgbouncer is not installed ({PGBOUNCER})")
    cfg = _config(pg_server, pgbouncer=True)
    report = run_fleet(cfg, say=print)
    _check(report, cfg)
    assert report.server_conns_max <= cfg.pool_size, summary(report)
    assert report.bouncer_servers_max is not None
    assert report.bouncer_servers_max <= cfg.pool_size, summary(report)
    assert report.bouncer_clients_max >= 1, summary(report)
