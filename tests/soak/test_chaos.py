"""The chaos soak, small: a few hundred jobs through real workers that are killed (SIGKILL and
SIGTERM) and restarted, one SIGSTOPped past its lease, one cut off from the database, one
PostgreSQL restart and one exproot outage, then every check of
:mod:`tests.soak.chaos` (``python -m tests.soak.chaos`` runs the full-size one)."""
from __future__ import annotations

import pytest

from tests.soak.chaos import ChaosConfig, run_chaos, summary
from tests.soak.checks import plan_problem
from tests.support.pgcluster import server_unavailable
from tests.support.needs import missing


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_soak_small():
    """300 jobs, 3 workers x 2 slots, kills every ~3 s, one PostgreSQL restart (4 s down, lease
    3 s) and one exproot outage (6 s): every check of the soak holds."""
    why = server_unavailable()
    if why:
        missing(f"cannot start a private PostgreSQL: {why}")
    cfg = ChaosConfig(jobs=300, workers=3, slots=2, seed=20240611, kill_interval=3.0,
                      pg_down=4.0, exproot_down=6.0, duration_limit=110.0)
    report = run_chaos(cfg, say=lambda line: print(line))
    text = summary(report)
    print(text)
    assert report.ok, text

    v = report.verdict
    # Every job DONE exactly once with an uninterrupted run's result; nothing else.
    assert v.statuses == {"DONE": 300}, text
    assert (v.done, v.lost, v.duplicated, v.extra_jobs, v.wrong_results, v.running_left) \
        == (300, 0, 0, 0, 0, 0), text
    # The storm happened, and the history tells it consistently.
    assert report.sigkills + report.sigterms >= 4, text
    # Each killed worker was started again (one stopping at the very end may not have been).
    assert report.sigkills <= report.worker_restarts <= report.sigkills + report.sigterms, text
    assert report.unexpected_worker_exits == 0
    assert report.pg_restarts == 1 and report.pg_down_s >= cfg.pg_down, text
    assert report.exproot_outages == 1 and report.exproot_down_s >= cfg.exproot_down, text
    # A worker was SIGSTOPped past its lease and worker 0 cut off from the database for
    # longer than it: their jobs were rescued, and nothing they no longer owned was written.
    assert report.stalls == 1 and report.netcuts == 1, text
    assert report.netcut_s >= cfg.netcut_s, text
    assert v.history_errors == 0 and v.spurious_losses == 0, text
    assert v.bookings >= 300
    # Some kill caught jobs running: they came back by lease (SIGKILL) or were requeued by
    # their stopping worker (SIGTERM), and finished later.
    assert v.lost_events + v.worker_requeues >= 1, text
    # Jobs the outage failed were requeued by the driver and then finished.
    assert v.user_requeues == report.err_sync_requeued + report.err_start_requeued, text
    # No job process outlived its worker.
    assert report.orphans == []
    # Table health: the hot tables are reported; booking reads the ready-jobs partial index
    # in order (no Sort) while jobs wait.
    assert set(report.dead_tuples) == {"jobs", "state", "events", "workers"}
    assert plan_problem(report.plan_start) is None, report.plan_start
    assert plan_problem(report.plan_mid) is None, report.plan_mid
    assert report.duration_s < 120, text
