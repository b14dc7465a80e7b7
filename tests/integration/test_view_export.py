"""Results as a flat SQL view and as CSV/JSON exports."""
from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa

from dbdict_worker.constants import Status
from dbdict_worker.records import RESERVED_KEYS
from tests.support.needs import psql

EVIL = 'a"; DROP TABLE jobs; --'


def _fill(store):
    ids = store.enqueue("pkg.exp", [
        {"lr": lr, "n": n, "opt": "adam", "model.n_hidden": 100, EVIL: "x", "pct%s": 1}
        for lr in (0.1, 0.01) for n in (1, 2)
    ]).created
    # Give two jobs results (floats, bools, a list), as a worker would.
    for b in store.book("w", "h", n=2):
        store.finish(b.token, Status.DONE,
                     state=dict(b.state, result=b.state["n"] * 1.5, ok=True, curve=[1, 2]))
    return ids


def test_view_is_typed_and_quoted(store):
    ids = _fill(store)
    columns = store.create_view("v")
    assert columns[: len(RESERVED_KEYS)] == list(RESERVED_KEYS)
    assert {"lr", "n", "model.n_hidden", EVIL, "pct%s", "result", "ok", "curve"} <= set(columns)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text(
            'SELECT "dbdict.id", lr, n, "model.n_hidden", result, ok, "dbdict.status" '
            "FROM v WHERE lr = 0.1 ORDER BY \"dbdict.id\"")).all()
        assert [r[0] for r in rows] == ids[:2]
        first = rows[0]
        assert isinstance(first[1], float) and isinstance(first[2], int)
        assert first[3] == 100 and first[4] == 1.5 and first[5] in (True, 1)
        assert first[6] == "DONE"
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 4
    # Re-creating after new keys appear picks them up.
    store.enqueue("pkg.exp", [{"lr": 0.5, "brand_new": "yes"}])
    assert "brand_new" in store.create_view("v")


def test_view_in_psql_with_numeric_comparison(pg_store, pg_url):
    _fill(pg_store)
    pg_store.create_view("v")
    out = psql(pg_url, "SELECT n, pg_typeof(lr), pg_typeof(n) FROM v WHERE lr = 0.1 ORDER BY n")
    assert out == ["1|double precision|bigint", "2|double precision|bigint"]


def test_view_refuses_our_own_table_names(store):
    from dbdict_worker.errors import UsageError

    with pytest.raises(UsageError):
        store.create_view("jobs")


def test_csv_export_one_row_per_job_one_column_per_key(store):
    _fill(store)
    buf = io.StringIO()
    n = store.export(buf, fmt="csv", where=[("lr", 0.1)])
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert n == 2 and len(rows) == 2
    assert {r["lr"] for r in rows} == {"0.1"} and {r["n"] for r in rows} == {"1", "2"}
    assert rows[0][EVIL] == "x" and rows[0]["dbdict.status"] == "DONE"
    assert rows[0]["curve"] == "[1, 2]" and rows[0]["ok"] == "True"
    header = buf.getvalue().splitlines()[0]
    assert header.startswith(",".join(RESERVED_KEYS))


def test_json_export(store):
    ids = _fill(store)
    buf = io.StringIO()
    assert store.export(buf, fmt="json") == 4
    data = json.loads(buf.getvalue())
    assert [d["dbdict.id"] for d in data] == ids
    assert data[0]["result"] == 1.5 and data[0]["curve"] == [1, 2]
    empty = io.StringIO()
    assert store.export(empty, fmt="json", where=[("lr", 7)]) == 0
    assert json.loads(empty.getvalue()) == []


def test_postgres_csv_by_copy_equals_the_python_writer(pg_store):
    from dbdict_worker import export

    tricky = [
        {"s": "a,b", "q": 'say "hi"', "nl": "two\nlines", "empty": "", "u": "日本 ✓",
         "f": 2.0, "g": 1e-05, "h": float("nan"), "i": float("-inf"), "b": True, "n": None,
         "l": [1, (2.5, "x")], "big": 2**62, "neg": -3, "tiny": 5e-324, "e20": 1e20},
        {"s": "plain", "f": 0.1, "b": False, "only_here": 7},
        {"s": "\\back\\slash", "f": 123456789.125, "q": "\t tab"},
    ]
    ids = pg_store.enqueue("pkg.exp", tricky, priority=2.0).created
    pg_store.set_priority(1.5, ids=[ids[1]])
    for b in pg_store.book("w", "h\"ost,1", n=2):
        pg_store.finish(b.token, Status.DONE, state=dict(b.state, result=0.5),
                        workdir="/x,y", error="")
    by_copy = io.StringIO()
    assert pg_store.export(by_copy, fmt="csv") == 3
    by_python = io.StringIO()
    keys = {k for _, s in pg_store.jobs_with_state() for k in s}
    export.write_csv(by_python, keys, pg_store.jobs_with_state())
    copy_rows = list(csv.reader(io.StringIO(by_copy.getvalue())))
    python_rows = list(csv.reader(io.StringIO(by_python.getvalue())))
    assert copy_rows == python_rows
    assert len(copy_rows) == 4 and copy_rows[1][copy_rows[0].index("nl")] == "two\nlines"


def test_keys_and_values_with_percent_signs_or_sql_words_survive_view_and_export(store, tmp_path):
    """psycopg2's dialect doubles '%' for its parameters in SQL run without any; SQLite's
    dialect does not quote every word SQLite reserves (``nothing``)."""
    store.enqueue("x.y", [{"pct%s": "50%", "nothing": 1, "select": 2.5}])
    names = store.create_view("odd")
    assert {"pct%s", "nothing", "select"} <= set(names)
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql(
            'SELECT "pct%%s", "nothing", "select" FROM odd' if not store.target.is_sqlite
            else 'SELECT "pct%s", "nothing", "select" FROM odd').one()
    assert tuple(row) == ("50%", 1, 2.5)
    out = io.StringIO()
    store.export(out, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert (rows[0]["pct%s"], rows[0]["nothing"], rows[0]["select"]) == ("50%", "1", "2.5")
    assert len(store.jobs(where=[("pct%s", "50%")])) == 1
