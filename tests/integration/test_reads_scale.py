"""The read paths made for big tables, at small scale: the view's join per key gives the
rows the GROUP BY pivot gave (with a WHERE on any column, past join_collapse_limit too, and
past MAX_JOINED_KEYS where it pivots again); ``list`` streams the bytes it printed from a
list; the CSV export's buffered line counter and the frame read through a pipe give what
they gave before. Correctness only: the timings are the bench's (``bench/reads.py``)."""
from __future__ import annotations

import io
import json
import math

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dbdict_worker import export
from dbdict_worker.cli.main import main as cli
from dbdict_worker.constants import Status
from dbdict_worker.db import views
from dbdict_worker.db.models import Selection
from dbdict_worker.records import job_record

#: Values of every type, keys some jobs lack, a key of mixed types, one always None.
def _states(n: int) -> list[dict]:
    out = []
    for i in range(n):
        s = {"i": i, "f": i / 4, "s": f"s{i}", "b": i % 2 == 0, "big": 2**62 + i,
             "l": [i, "x"], "mixed": [1, "x", True, 2.5][i % 4], "none": None,
             "k.dotted": i % 3}
        if i % 3:
            s["some"] = i * 10
        out.append(s)
    return out


def _fill(store, n: int = 12) -> list[int]:
    ids = store.enqueue("pkg.exp", _states(n)).created
    for b in store.book("w", "h", n=3):
        store.finish(b.token, Status.DONE, state=dict(b.state, loss=b.state["f"] + 0.5))
    return ids


def _normal(row) -> tuple:
    """A row comparable across runs: NaN equal to NaN."""
    return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)


def _pivot_rows(store, where) -> list[tuple]:
    """The rows of the view's old form (the GROUP BY pivot) where ``where(columns)``."""
    with store.engine.connect() as conn:
        stmt, _ = views.view_select(conn, Selection(), joins=False)
        sub = stmt.subquery("pivot")
        q = sa.select(sub).where(where(sub.c)).order_by(sub.c["dbdict.id"])
        return [_normal(r) for r in conn.execute(q)]


def _view_rows(store, name: str, where) -> list[tuple]:
    with store.engine.connect() as conn:
        flat = sa.Table(name, sa.MetaData(), autoload_with=conn)
        q = sa.select(flat).where(where(flat.c)).order_by(flat.c["dbdict.id"])
        return [_normal(r) for r in conn.execute(q)]


FILTERS = [
    ("all", lambda c: sa.true()),
    ("int", lambda c: c["i"] == 5),
    ("float", lambda c: c["f"] == 1.25),
    ("text", lambda c: c["s"] == "s7"),
    ("bool", lambda c: c["b"] == sa.true()),
    ("big int", lambda c: c["big"] == 2**62 + 3),
    ("missing key", lambda c: c["some"].is_(None)),
    ("result", lambda c: c["loss"] > 0),
    ("two keys", lambda c: (c["k.dotted"] == 1) & (c["some"] == 40)),
    ("status", lambda c: c["dbdict.status"] == "DONE"),
]


@pytest.mark.parametrize("what,where", FILTERS, ids=[f[0] for f in FILTERS])
def test_the_joined_view_gives_the_pivots_rows(store, what, where):
    _fill(store)
    names = store.create_view("flat")
    with store.engine.connect() as conn:
        _, pivot_names = views.view_select(conn, Selection(), joins=False)
    assert names == pivot_names
    got = _view_rows(store, "flat", where)
    assert got == _pivot_rows(store, where)
    assert got or what == "missing key"


def test_the_joined_view_keeps_the_pivots_column_types(pg_store, pg_url):
    from tests.support.needs import psql

    _fill(pg_store)
    pg_store.create_view("flat")
    out = psql(pg_url, "SELECT pg_typeof(i), pg_typeof(f), pg_typeof(s), pg_typeof(b), "
                       "pg_typeof(big), pg_typeof(l), pg_typeof(mixed), pg_typeof(loss) "
                       "FROM flat LIMIT 1")
    assert out == ["bigint|double precision|text|boolean|bigint|text|text|double precision"]


def test_a_filter_past_join_collapse_limit_still_gives_the_right_rows(store):
    # 12 keys: the last ones are past the first 8 joined tables PostgreSQL reorders.
    store.enqueue("pkg.exp", [{f"k{j:02d}": i * 100 + j for j in range(12)}
                              for i in range(20)])
    store.create_view("wide")
    where = lambda c: c["k11"] == 1311  # noqa: E731
    got = _view_rows(store, "wide", where)
    assert len(got) == 1 and got == _pivot_rows(store, where)


def test_more_keys_than_joined_pivot_again(store):
    n = views.MAX_JOINED_KEYS + 5  # SQLite refuses a join of more than 64 tables
    store.enqueue("pkg.exp", [{f"k{j:03d}": i + j for j in range(n)} for i in range(3)])
    names = store.create_view("wider")
    assert len([c for c in names if c.startswith("k")]) == n
    where = lambda c: c[f"k{n - 1:03d}"] == n  # noqa: E731
    got = _view_rows(store, "wider", where)
    assert len(got) == 1 and got == _pivot_rows(store, where)


# --------------------------------------------------------------------------------------------
# list: streamed, the same bytes


def _list(url: str, *args: str) -> str:
    res = CliRunner().invoke(cli, ["list", "--db", url, *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("nan", ["string", "null", "raw"])
def test_list_json_streams_what_one_dumps_of_the_list_printed(store, db_url, nan):
    from dbdict_worker.cli.main import _LIST_PAGE

    states = _states(_LIST_PAGE + 7)
    states[3]["f"] = float("nan")
    states[4]["s"] = "two\nlines \u2028 日本"
    states[5]["f"] = float("-inf")
    store.enqueue("pkg.exp", states)
    rows = store.jobs_with_state()
    whole = export.dumps([job_record(j, s) for j, s in rows], nan=nan, indent=1,
                         ensure_ascii=False) + "\n"
    assert _list(db_url, "--json", "--json-nan", nan) == whole  # streamed
    assert json.loads(whole.replace("NaN", "null").replace("-Infinity", "null"))
    few = export.dumps([job_record(j, s) for j, s in rows[:3]], nan=nan, indent=1,
                       ensure_ascii=False) + "\n"
    assert _list(db_url, "--json", "--json-nan", nan, "--limit", "3") == few
    assert _list(db_url, "--json", "--json-nan", nan, "--limit", str(_LIST_PAGE + 2)) == \
        export.dumps([job_record(j, s) for j, s in rows[:_LIST_PAGE + 2]], nan=nan,
                     indent=1, ensure_ascii=False) + "\n"


def test_list_of_nothing_and_text_list(store, db_url):
    assert _list(db_url, "--json") == "[]\n"
    store.enqueue("pkg.exp", _states(30))
    text = _list(db_url)
    assert len(text.splitlines()) == 31 and text.splitlines()[0].split()[:3] == \
        ["id", "table", "status"]
    assert _list(db_url, "--limit", "5000") == text
    assert _list(db_url, "--where", "i=7", "--json") == export.dumps(
        [job_record(j, s) for j, s in store.jobs_with_state(where=[("i", 7)])],
        indent=1, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# CSV export's line counter, the frame through a pipe


@pytest.mark.parametrize("pieces", [
    ['a,b\n', '1,"x\ny"\n', '2,z\n'],
    ['a,b\n1,"x', '\n', 'y"\n2,"""q"""\n'],
    ['h\n'] + [f'{i},"{"," * (i % 3)}"\n' for i in range(5000)],
])
def test_the_line_counter_counts_records_and_writes_everything(pieces):
    out = io.StringIO()
    counter = export.LineCounter(out)
    for p in pieces:
        counter.write(p)
    counter.flush()
    text = "".join(pieces)
    assert out.getvalue() == text
    import csv
    assert counter.rows == len(list(csv.reader(io.StringIO(text)))) - 1


def test_pg_csv_export_equals_the_python_writer_past_the_held_size(pg_store):
    pg_store.enqueue("pkg.exp", _states(3000))
    by_copy = io.StringIO()
    assert pg_store.export(by_copy, fmt="csv") == 3000
    assert len(by_copy.getvalue()) > export.LineCounter.HOLD
    rows = pg_store.jobs_with_state()
    by_python = io.StringIO()
    export.write_csv(by_python, {k for _, s in rows for k in s}, rows)
    import csv
    assert list(csv.reader(io.StringIO(by_copy.getvalue()))) == \
        list(csv.reader(io.StringIO(by_python.getvalue())))


def test_a_frame_bigger_than_a_pipe_equals_its_parts(store):
    import pandas as pd

    _fill(store, 3000)
    whole = store.dataframe()
    assert len(whole) == 3000
    part = store.dataframe(where=[("k.dotted", 1)])
    expect = whole[whole["k.dotted"] == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, expect)
    from dbdict_worker.records import RESERVED_KEYS
    assert store.dataframe(where=[("i", -1)]).shape == (0, len(RESERVED_KEYS))


def test_key_names_from_the_index_are_the_selected_jobs_keys(pg_store):
    from dbdict_worker.db import queries

    pg_store.enqueue("pkg.exp", [{"a": 1, "b": "x"}, {"a": 2, "é": None}], table="t1")
    pg_store.enqueue("pkg.exp", [{"c": 1.5}], table="t2")
    with pg_store.engine.connect() as conn:
        def names(**select):
            return queries.key_names(conn, pg_store.selection(conn, **select))

        def types(**select):
            return sorted(queries.key_types(conn, pg_store.selection(conn, **select)))

        assert names(tables=None) == types(tables=None) == ["a", "b", "c", "é"]
        assert names(tables=["t1", "t2"]) == types(tables=["t1", "t2"])
        # Not every job: None (key_types reads them), and the export is the same.
        assert names(tables=["t1"]) is None and names(where=[("a", 1)]) is None
        assert names(statuses=[Status.START]) is None and names(ids=[1]) is None
        expected = {"t1": types(tables=["t1"]), "both": types(tables=["t1", "t2"]),
                    "all": types(tables=None)}
    assert expected["t1"] == ["a", "b", "é"]
    for name, tables in (("t1", ["t1"]), ("both", ["t1", "t2"]), ("all", None)):
        out = io.StringIO()
        pg_store.export(out, fmt="csv", tables=tables)
        header = out.getvalue().splitlines()[0].split(",")
        assert [h for h in header if not h.startswith("dbdict.")] == expected[name]
