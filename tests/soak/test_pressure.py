"""The pressure scenarios, short: each one's pressure for 12-15 s on 2 real workers fed a steady
stream of short jobs, then every check of the soak (``python -m tests.soak.pressure`` runs the
full-length ones and prints their table)."""
from __future__ import annotations

import pytest

from tests.soak.pressure import HEADER, PressureConfig, run_pressure, table_row
from tests.support.pgcluster import server_unavailable
from tests.support.needs import missing


@pytest.mark.timeout(150)
@pytest.mark.parametrize("scenario,seconds", [
    pytest.param("idle_xact", 12, marks=pytest.mark.slow),
    ("rr_scans", 12),
    ("terminate", 12),
    ("idle_conns", 12),
    pytest.param("netcut", 16, marks=pytest.mark.slow),  # a 10 s cut, then a restart
])
def test_pressure_scenario_short(scenario: str, seconds: float):
    """No job is lost or run twice, every check holds, and once the pressure is gone the
    workers keep up with the stream again."""
    why = server_unavailable()
    if why:
        missing(f"cannot start a private PostgreSQL: {why}")
    cfg = PressureConfig(scenario, minutes=seconds / 60, before=5, after=8, rate=4, workers=2,
                         slots=2, seed=20261201, durable=False, drain_limit=60)
    report = run_pressure(cfg, say=print)
    text = HEADER + "\n" + table_row(report)
    print(text)
    assert (report.lost, report.duplicated) == (0, 0), text
    assert report.ok, text
    assert set(report.phases) == {"before", "during", "after"}, text
    # The stream is fixed and well under the workers' capacity: after the pressure they
    # finish at least what arrives (a backlog only adds). A fraction, never a time.
    recovery = report.recovery()
    assert recovery is not None and recovery >= 0.5, text
    assert report.phases["during"].bookings > 0 or scenario in ("idle_conns", "netcut"), text
