"""The peer-queue figures (pgqueuer) on the real PostgreSQL: small sizes, no timing asserted.

Each function must run in a scratch database of its own and leave none behind, and must check
that every job ran exactly once (it raises otherwise, so a returned rate means they did).
"""
from __future__ import annotations

import pytest

from dbdict_worker.bench import peers
from dbdict_worker.bench.samples import sample_states
from tests.support.needs import missing


@pytest.fixture
def admin_url(pg_server) -> str:
    """The test server's admin URL (the scratch databases are created next to the others)."""
    if peers.pgqueuer_version() is None:
        missing("pgqueuer/asyncpg not installed (the test and bench extras bring them)")
    _engine, url, _template = pg_server
    return url.render_as_string(hide_password=False)


def scratch_databases(pg_server) -> set[str]:
    engine = pg_server[0]
    with engine.connect() as conn:
        return set(conn.exec_driver_sql(
            "SELECT datname FROM pg_database WHERE datname LIKE %(p)s",
            {"p": peers.DB_PREFIX + "%"}).scalars())


def test_pgqueuer_drain_runs_every_job_once_and_drops_its_database(pg_server, admin_url):
    before = scratch_databases(pg_server)
    rate = peers.measure_pgqueuer_queue(admin_url, 300, 2)
    assert rate > 0
    claim_one = peers.measure_pgqueuer_queue(admin_url, 100, 2, batch_size=1)
    assert claim_one > 0
    assert scratch_databases(pg_server) <= before


def test_pgqueuer_enqueue_rate(pg_server, admin_url):
    before = scratch_databases(pg_server)
    assert peers.measure_pgqueuer_enqueue(admin_url, sample_states(1_000), batch=400) > 0
    assert scratch_databases(pg_server) <= before


def test_scratch_database_is_dropped_when_the_body_fails(pg_server, admin_url):
    name = f"{peers.DB_PREFIX}_test_{id(pg_server) % 100000}"
    with pytest.raises(ZeroDivisionError):
        with peers.scratch_database(admin_url, name) as url:
            assert name in scratch_databases(pg_server)
            assert url.endswith(f"/{name}")
            1 / 0
    assert name not in scratch_databases(pg_server)
