"""Test fixtures: a real PostgreSQL for every test that needs one, and SQLite beside it.

PostgreSQL comes from one of two places:

- ``DBDICT_TEST_DSN`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``): an existing
  server where the tests may create and drop databases;
- otherwise a throwaway server that pytest-postgresql starts with ``pg_ctl`` (it must be on
  PATH); as root, where PostgreSQL refuses to run, tests/pgserver.py starts one as the
  ``postgres`` user instead.

A template database with the schema is built once per session; each test gets its own clone
(``CREATE DATABASE ... TEMPLATE``), so tests never see each other's rows.
"""
from __future__ import annotations

import itertools
import os
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dbdict_worker.store import Store
from tests.support.needs import missing


_counter = itertools.count()


def _admin_url(request: pytest.FixtureRequest) -> sa.URL:
    dsn = os.environ.get("DBDICT_TEST_DSN")
    if dsn:
        return make_url(dsn).set(drivername="postgresql+psycopg2")
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root; our own helper runs it as the postgres user.
        return make_url(request.getfixturevalue("private_pg").url()).set(
            drivername="postgresql+psycopg2")
    proc = request.getfixturevalue("postgresql_proc")
    return sa.URL.create(
        "postgresql+psycopg2",
        username=proc.user,
        password=proc.password or None,
        host=proc.host,
        port=proc.port,
        database="postgres",
    )


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest):
    """(admin engine, admin URL, template database name) for the session."""
    url = _admin_url(request)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    template = f"dbdict_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{template}"')
    store = Store(_target(url.set(database=template)), retry_seconds=5)
    store.upgrade()
    store.close()
    yield engine, url, template
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    engine.dispose()


def _target(url: sa.URL):
    from dbdict_worker.db.connect import Target

    return Target(url, None)


def _fresh_database(pg_server, prefix: str, template: bool):
    """Create a database (a clone of the schema template, or empty), yield its URL, drop it."""
    engine, url, template_name = pg_server
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    clause = f' TEMPLATE "{template_name}"' if template else ""
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
    yield url.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh PostgreSQL database with the current schema, as a URL string."""
    yield from _fresh_database(pg_server, "dbdict_t", template=True)


@pytest.fixture
def empty_pg_url(pg_server) -> str:
    """A fresh PostgreSQL database with no schema at all."""
    yield from _fresh_database(pg_server, "dbdict_e", template=False)


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
    from tests.support import pgserver

    why = pgserver.available()
    if why:
        missing(f"cannot start a private PostgreSQL: {why}")
    server = pgserver.PrivateServer().init()
    server.start()
    yield server
    server.cleanup()
