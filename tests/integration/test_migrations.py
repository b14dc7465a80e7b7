"""The schema: migrations build exactly the model, and commands refuse a wrong schema."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from dbdict_worker.constants import DEFAULT_MAX_RESTARTS, DEFAULT_TABLE, Status
from dbdict_worker.db import enqueue as enqueueq
from dbdict_worker.db import migrate
from dbdict_worker.db.schema import SCHEMA_REVISION, VERSION_TABLE, metadata
from dbdict_worker.errors import SchemaError
from dbdict_worker.state import flatten, param_hash
from dbdict_worker.store import Store


def test_one_head_and_it_is_what_the_code_expects():
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [SCHEMA_REVISION]


@pytest.mark.filterwarnings("ignore:.*expression-based index")
@pytest.mark.parametrize("backend", ["empty_pg_url", "sqlite_url"])
def test_upgrade_from_empty_equals_the_model(request, backend):
    url = request.getfixturevalue(backend)
    store = Store.open(url, check_schema=False)
    before, after = store.upgrade()
    assert after == SCHEMA_REVISION
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(ctx, metadata)
        assert diff == []
        insp = sa.inspect(conn)
        ready = {ix["name"]: ix for ix in insp.get_indexes("jobs")}
        assert {"jobs_ready", "jobs_ready_by_table", "jobs_dedup"} <= set(ready)
    # Running it again changes nothing.
    assert store.upgrade() == (SCHEMA_REVISION, SCHEMA_REVISION)
    store.close()


def test_autovacuum_is_tuned_on_hot_tables(pg_store):
    with pg_store.engine.connect() as conn:
        opts = dict(conn.execute(sa.text(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('jobs', 'state')")).all())
    assert "autovacuum_vacuum_scale_factor=0.01" in opts["jobs"]
    assert "autovacuum_vacuum_scale_factor=0.02" in opts["state"]


def test_booking_reads_a_ready_index_in_order(pg_store):
    pg_store.enqueue("pkg.exp", [{"i": i} for i in range(3000)], table="big")
    pg_store.enqueue("pkg.exp", [{"i": i} for i in range(20)], table="small")
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE jobs"))
        ids = dict(conn.execute(sa.text("SELECT name, id FROM job_tables")).all())
        for name in ("big", "small"):
            plan = "\n".join(r[0] for r in conn.execute(sa.text(
                "EXPLAIN SELECT id FROM jobs WHERE status = 0 AND table_id IN (:t) "
                "ORDER BY priority DESC, id LIMIT 4 FOR UPDATE SKIP LOCKED"), {"t": ids[name]}))
            assert "Index Scan using jobs_ready" in plan and "Sort" not in plan, plan
        assert "jobs_ready_by_table" in plan  # the small table is not found by scanning all


def test_upgrade_from_0001_keeps_the_jobs_and_compares_bytes(empty_pg_url):
    """A database made by the first release: the upgrade keeps its jobs, their state and
    its duplicate detection, and makes the indexed text columns byte-ordered."""
    from alembic import command

    store = Store.open(empty_pg_url, check_schema=False)
    with store.engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0001")
    with store.engine.begin() as conn:
        assert migrate.current_revision(conn) == "0001"
    old = _enqueue_as_released(store, [{"lr": 0.1, "name": "é"}, {"lr": 0.01, "name": "z"}])
    assert store.upgrade() == ("0001", SCHEMA_REVISION)
    store.close()
    store = Store.open(empty_pg_url)
    assert [(j.id, s) for j, s in store.jobs_with_state()] == [
        (old[0], {"lr": 0.1, "name": "é"}), (old[1], {"lr": 0.01, "name": "z"})]
    with store.engine.connect() as conn:
        collations = dict(conn.execute(sa.text(
            "SELECT c.relname || '.' || a.attname, coalesce(co.collname, '') "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
            "WHERE c.relname IN ('jobs', 'state') AND a.attname IN "
            "('experiment', 'params_hash', 'key', 'txt')")).all())
    assert collations == {"jobs.experiment": "C", "jobs.params_hash": "C",
                          "state.key": "C", "state.txt": "C"}
    assert store.enqueue("pkg.exp", [{"lr": 0.1, "name": "é"}]).skipped == 1
    assert [s["name"] for _, s in store.jobs_with_state(where={"name": "é"})] == ["é"]
    store.close()


def _enqueue_as_released(store: Store, states: list[dict],
                         status: Status = Status.START) -> list[int]:
    """Jobs as an earlier release wrote them: only the columns every revision has (today's
    enqueue writes today's columns, which an old schema lacks)."""
    dialect = store.engine.dialect.name
    with store.engine.begin() as conn:
        table_id = enqueueq.ensure_table(conn, DEFAULT_TABLE)
        ids = []
        for st in states:
            flat = flatten(st)
            ids.append(conn.execute(
                sa.text("INSERT INTO jobs (table_id, experiment, status, params_hash) "
                        "VALUES (:t, 'pkg.exp', :s, :h) RETURNING id"),
                {"t": table_id, "s": int(status), "h": param_hash(flat)}).scalar_one())
            enqueueq.insert_state(conn, [(ids[-1], enqueueq.prepare_state(dialect, flat))])
    return ids


@pytest.mark.parametrize("backend", ["empty_pg_url", "sqlite_url"])
def test_upgrade_from_0002_adds_the_restart_columns_without_a_rewrite(request, backend):
    """A database of revision 0002 with jobs: the upgrade keeps them, each ready now with no
    restarts and the default limit, and (PostgreSQL) does not rewrite the jobs table, so it is
    instant however many jobs there are."""
    from alembic import command

    url = request.getfixturevalue(backend)
    engine = sa.create_engine(url)  # not Store.open: that makes a new SQLite file current
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0002")
    engine.dispose()
    store = Store.open(url, check_schema=False)
    ready = _enqueue_as_released(store, [{"i": i} for i in range(3)])
    done = _enqueue_as_released(store, [{"i": 9}], Status.DONE)
    pg = store.engine.dialect.name == "postgresql"
    file_of_jobs = "SELECT relfilenode FROM pg_class WHERE relname = 'jobs'"
    if pg:
        with store.engine.connect() as conn:
            before = conn.execute(sa.text(file_of_jobs)).scalar_one()
    assert store.upgrade() == ("0002", SCHEMA_REVISION)
    if pg:
        with store.engine.connect() as conn:
            assert conn.execute(sa.text(file_of_jobs)).scalar_one() == before
    store.close()
    store = Store.open(url)
    jobs = store.jobs()
    assert [(j.id, j.status, j.restarts, j.max_restarts, j.not_before) for j in jobs] == [
        *[(i, Status.START, 0, DEFAULT_MAX_RESTARTS, None) for i in ready],
        (done[0], Status.DONE, 0, DEFAULT_MAX_RESTARTS, None)]
    booked = store.book("w1", "h", n=5)
    assert sorted(b.job.id for b in booked) == ready
    assert store.enqueue("pkg.exp", [{"i": 9}]).skipped == 1
    store.close()


def test_missing_schema_is_refused_naming_the_command(empty_pg_url):
    with pytest.raises(SchemaError, match="run `dbdict db upgrade`"):
        Store.open(empty_pg_url)


@pytest.mark.parametrize("backend", ["pg_url", "sqlite_url"])
def test_outdated_and_newer_schemas_are_refused(request, backend):
    url = request.getfixturevalue(backend)
    Store.open(url).close()
    store = Store.open(url, check_schema=False)
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0000'"))
    with pytest.raises(SchemaError, match=r"revision 0000.*run `dbdict db upgrade`"):
        Store.open(url)
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="newer than this dbdict-worker"):
        Store.open(url)
    store.close()
