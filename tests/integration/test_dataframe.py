"""Results in pandas: ``Store.dataframe`` and ``read_results`` give the view's columns with
the view's types, the same values and the same jobs as ``export --format json``, on
PostgreSQL and SQLite."""
from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import sqlalchemy as sa

import dbdict_worker
from dbdict_worker import export
from dbdict_worker.constants import Status
from dbdict_worker.records import RESERVED_KEYS

INF = float("inf")
NAN = float("nan")
# Strings a CSV reader would take for NULL, or for a number, unless told otherwise.
AWKWARD = ["", "\\N", "NaN", "NA", "a,\"b\"\nc"]
SUBMISSION = {"user": "ann", "host": "login1", "command": '["dbdict-enqueue", "pkg.exp"]',
              "cwd": "/home/ann", "git_repo": "/home/ann", "git_commit": "a" * 40,
              "git_dirty": True, "git_diff_hash": "b" * 64}
RUN_INFO = json.dumps({"python": "3.11.7", "version": "0.1.0", "gpus": "NVIDIA A100"})
TEXT = "str" if int(pd.__version__.split(".")[0]) >= 3 else "object"
TIME = "datetime64[us, UTC]"
#: A key and values with '%', which psycopg2's SQL text doubles unless told otherwise.
PCT = "pct%s"
#: The dtype of every reserved column.
RESERVED_DTYPES = {
    "dbdict.id": "int64", "dbdict.table": TEXT, "dbdict.experiment": TEXT,
    "dbdict.status": TEXT, "dbdict.priority": "float64", "dbdict.attempts": "int64",
    "dbdict.replica": "int64", "dbdict.host": TEXT, "dbdict.worker": TEXT,
    "dbdict.workdir": TEXT, "dbdict.error": TEXT, "dbdict.created": TIME,
    "dbdict.booked": TIME, "dbdict.finished": TIME, "dbdict.user": TEXT,
    "dbdict.enqueue_host": TEXT, "dbdict.command": TEXT, "dbdict.cwd": TEXT,
    "dbdict.git_repo": TEXT, "dbdict.git_commit": TEXT, "dbdict.git_dirty": "boolean",
    "dbdict.git_diff_hash": TEXT, "dbdict.python": TEXT, "dbdict.version": TEXT,
    "dbdict.gpus": TEXT,
}
#: The user keys of :func:`_fill`: ints, floats (nan, inf), bools, text, a key with mixed
#: types, a list, ints that only some jobs have, and a key that is always None.
KEY_DTYPES = {PCT: TEXT, "i": "Int64", "lr": "float64", "ok": "boolean", "name": TEXT,
              "mixed": TEXT, "curve": TEXT, "seed": "Int64", "unset": TEXT, "score": "float64"}


def _fill(store) -> list[int]:
    """Five jobs in table ``a`` (one with provenance, booked and DONE with results), two in
    table ``b``."""
    lrs = [0.1, NAN, INF, -INF, 1e-300]
    mixed = [1, "x", True, 2.5, [1, "two"]]
    states = [{"i": k, "lr": lrs[k], "ok": k % 2 == 0, "name": AWKWARD[k], "mixed": mixed[k],
               "curve": [k, k / 3, "s"], "unset": None, **({"seed": 10 ** 12 + k} if k < 2
                                                                 else {}),
               PCT: ["50%", "%s", "%(x)s'"][k % 3]}
              for k in range(5)]
    ids = store.enqueue("pkg.exp", states[:1], table="a", submission=SUBMISSION).created
    ids += store.enqueue("pkg.exp", states[1:], table="a").created
    (b,) = store.book("w1", "node7", tables=["a"], n=1, run_info=RUN_INFO)
    store.finish(b.token, Status.DONE, state=dict(b.state, score=0.75))
    ids += store.enqueue("other.exp", [{"i": 100 + k, "lr": 0.5} for k in range(2)],
                         table="b").created
    return ids


def _json(store, **select) -> list[dict]:
    buf = io.StringIO()
    store.export(buf, fmt="json", json_nan="raw", **select)
    return json.loads(buf.getvalue())


def _same(frame_value, json_value, dtype) -> bool:
    """A frame cell equals the JSON export's value, as the view types it."""
    if json_value is None:
        return frame_value is pd.NA or frame_value is pd.NaT or (
            isinstance(frame_value, float) and math.isnan(frame_value))
    if dtype == TIME:
        return frame_value == pd.Timestamp(json_value)
    if dtype == TEXT:  # text keys, and mixed ones: the Python spelling export's CSV writes
        return frame_value == export.cell(json_value)
    if isinstance(json_value, float) and math.isnan(json_value):
        return math.isnan(frame_value)
    return frame_value == json_value and (dtype != "float64" or isinstance(frame_value, float))


def _check_against_json(frame: pd.DataFrame, rows: list[dict]) -> None:
    assert list(frame["dbdict.id"]) == [r["dbdict.id"] for r in rows]
    for n, row in enumerate(rows):
        for col in frame.columns:
            value = frame[col].iloc[n]
            assert _same(value, row.get(col), str(frame[col].dtype)), (col, value, row.get(col))


def test_columns_and_dtypes_are_the_views(store):
    _fill(store)
    frame = store.dataframe()
    assert list(frame.columns) == list(RESERVED_KEYS) + sorted(KEY_DTYPES)  # PCT first
    assert {c: str(t) for c, t in frame.dtypes.items()} == {**RESERVED_DTYPES, **KEY_DTYPES}
    assert list(frame.columns) == store.create_view("v")  # the view's own columns
    assert isinstance(frame.index, pd.RangeIndex) and list(frame["dbdict.id"]) == sorted(
        frame["dbdict.id"])


def test_pg_dtypes_follow_the_views_sql_types(pg_store):
    """Each column's dtype is what the view's PostgreSQL type gives."""
    _fill(pg_store)
    pg_store.create_view("v")
    frame = pg_store.dataframe()
    with pg_store.engine.connect() as conn:
        sql_types = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("v")}
    assert len(sql_types) == len(frame.columns)
    for name, t in sql_types.items():
        # create_view's DDL still names a key with % as %% on PostgreSQL (views.py renders
        # it for psycopg2); undone here so that this checks types, not that.
        dtype = str(frame[name.replace("%%", "%")].dtype)
        if isinstance(t, sa.Boolean):
            assert dtype == "boolean", name
        elif isinstance(t, sa.Integer):
            assert dtype in ("Int64", "int64"), name
        elif isinstance(t, sa.Float):
            assert dtype == "float64", name
        elif isinstance(t, sa.DateTime):
            assert dtype == TIME, name
        else:
            assert dtype == TEXT, name


def test_values_equal_the_json_export(store):
    ids = _fill(store)
    frame = store.dataframe()
    _check_against_json(frame, _json(store))
    by_id = frame.set_index("dbdict.id")
    first = by_id.loc[ids[0]]
    # Spot checks of what a user relies on: nan and inf kept, the awkward strings as
    # they were (not taken for NULL), missing values as NA, provenance and results present.
    assert math.isnan(by_id.loc[ids[1], "lr"]) and list(by_id["lr"])[2:4] == [INF, -INF]
    assert list(by_id["name"])[:5] == AWKWARD
    assert list(by_id["mixed"])[:5] == ["1", "x", "True", "2.5", "[1, 'two']"]
    assert by_id.loc[ids[0], "curve"] == "[0, 0.0, 's']"
    assert by_id["seed"].isna().tolist() == [False, False, True, True, True, True, True]
    assert by_id["unset"].isna().all() and by_id["ok"].tolist()[:2] == [True, False]
    assert first["dbdict.status"] == "DONE" and first["score"] == 0.75
    assert first["dbdict.host"] == "node7" and first["dbdict.user"] == "ann"
    assert by_id["dbdict.git_dirty"].tolist()[0] is True and first["dbdict.gpus"] == "NVIDIA A100"
    assert by_id.loc[ids[0], "dbdict.finished"] >= by_id.loc[ids[0], "dbdict.booked"]
    assert by_id["dbdict.booked"].isna().tolist() == [False] + [True] * 6
    assert by_id.loc[ids[1], "dbdict.git_dirty"] is pd.NA
    assert list(by_id[PCT])[:5] == ["50%", "%s", "%(x)s'", "50%", "%s"]


@pytest.mark.parametrize("select", [
    {"table": "b"},
    {"where": {"lr": 0.5}},
    {"where": [("ok", True)]},
    {"statuses": ["DONE"]},
    {"statuses": [Status.START], "table": "a"},
    {"ids": "first-two"},
    {"where": {PCT: "%(x)s'"}},
])
def test_filters_select_the_same_jobs_as_export(store, select):
    ids = _fill(store)
    if select.get("ids") == "first-two":
        select = {"ids": ids[:2]}
    frame = store.dataframe(**select)
    export_select = {("tables" if k == "table" else k): v for k, v in select.items()}
    rows = _json(store, **export_select)
    assert 0 < len(rows) < len(ids)
    _check_against_json(frame, rows)
    # Only the keys the selected jobs have: as the view over the same selection.
    assert set(frame.columns) - set(RESERVED_KEYS) == {k for r in rows for k in r} - set(
        RESERVED_KEYS)


def test_empty_selection_gives_the_reserved_columns(store):
    _fill(store)
    frame = store.dataframe(where={"lr": 12345})
    assert len(frame) == 0 and list(frame.columns) == list(RESERVED_KEYS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == RESERVED_DTYPES
    assert list(store.dataframe(statuses=["CANCELED"]).columns) == list(RESERVED_KEYS)


def test_read_results_opens_and_closes_a_store(store, db_url):
    _fill(store)
    frame = dbdict_worker.read_results(db_url, table="a", statuses=["START"])
    assert len(frame) == 4 and set(frame["dbdict.status"]) == {"START"}
    _check_against_json(frame, _json(store, tables=["a"], statuses=["START"]))
    # The URL's own table (postgresql://host/db/TABLE) is the default, as for Store.open.
    if db_url.startswith("postgresql"):
        assert set(dbdict_worker.read_results(db_url + "/b")["dbdict.table"]) == {"b"}


def test_without_pandas_one_line_names_the_extra(db_url, tmp_path):
    """A Python where pandas cannot be imported: the store works, the frame says what to
    install (a shadowing package ahead of the installed pandas, in a real interpreter)."""
    shadow = tmp_path / "shadow" / "pandas"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pandas'\", name='pandas')\n")
    code = ("import sys; from dbdict_worker.store import Store; from dbdict_worker.errors "
            "import UsageError\ns = Store.open(sys.argv[1]); s.enqueue('p.e', [{'x': 1}])\n"
            "try:\n    s.dataframe()\nexcept UsageError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, db_url], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(shadow.parent)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Store.dataframe needs pandas: pip install 'dbdict-worker[pandas]'\n"
