"""``dbdict export --format parquet -o FILE`` as a user runs it (PostgreSQL and SQLite): the
file reads back in pandas with the view's column types and the values ``--format json``
gives; it refuses standard output, and says which extra to install when pyarrow is missing."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from dbdict_worker.records import RESERVED_KEYS
from dbdict_worker.store import Store
from tests.integration.test_dataframe import KEY_DTYPES, RESERVED_DTYPES, _check_against_json
from tests.integration.test_dataframe import _fill


@pytest.fixture
def filled(cli):
    with Store.open(cli.url) as store:
        ids = _fill(store)
        expected = store.dataframe()
    # And one job enqueued by the command, with its provenance.
    out = cli.json("dbdict-enqueue", "pkg.exp", "i=7", "lr=0.25", "--table", "a", "--json")
    return ids + out["created"], expected


def test_parquet_round_trips_with_the_views_types(cli, filled, tmp_path):
    ids, _ = filled
    target = tmp_path / "sweep.parquet"
    proc = cli("dbdict", "export", "--format", "parquet", "-o", str(target))
    assert proc.stdout == "" and proc.stderr.strip() == f"wrote {len(ids)} jobs to {target}"
    frame = pd.read_parquet(target)
    assert list(frame.columns) == list(RESERVED_KEYS) + sorted(KEY_DTYPES)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {**RESERVED_DTYPES, **KEY_DTYPES}
    _check_against_json(frame, cli.json("dbdict", "export", "--format", "json",
                                        "--json-nan", "raw"))
    with Store.open(cli.url) as store:
        pd.testing.assert_frame_equal(frame, store.dataframe())
    assert frame["dbdict.command"].iloc[-1].startswith('["dbdict-enqueue"')
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("args", [("--table", "b"), ("--where", "ok=True"),
                                  ("--status", "DONE"), ("--where", "lr=0.25", "-s", "START")])
def test_parquet_selects_the_jobs_json_selects(cli, filled, tmp_path, args):
    target = tmp_path / "part.parquet"
    cli("dbdict", "export", "--format", "parquet", "-o", str(target), *args)
    rows = json.loads(cli("dbdict", "export", "--format", "json", "--json-nan", "raw",
                          *args).stdout)
    frame = pd.read_parquet(target)
    assert 0 < len(frame) == len(rows) < len(filled[0])
    _check_against_json(frame, rows)


def test_an_empty_selection_writes_the_reserved_columns(cli, filled, tmp_path):
    target = tmp_path / "none.parquet"
    proc = cli("dbdict", "export", "--format", "parquet", "-o", str(target),
               "--where", "lr=999")
    assert proc.stderr.strip() == f"wrote 0 jobs to {target}"
    frame = pd.read_parquet(target)
    assert len(frame) == 0 and list(frame.columns) == list(RESERVED_KEYS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == RESERVED_DTYPES


@pytest.mark.parametrize("output", [(), ("-o", "-")])
def test_parquet_refuses_standard_output(cli, filled, output):
    proc = cli("dbdict", "export", "--format", "parquet", *output, ok=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: --format parquet writes a binary file: give it with -o FILE"]


def test_without_pyarrow_one_line_names_the_extra(cli, filled, tmp_path):
    # A pyarrow that cannot be imported, ahead of the installed one on the path.
    shadow = tmp_path / "shadow" / "pyarrow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pyarrow'\", name='pyarrow')\n")
    target = tmp_path / "x.parquet"
    proc = cli("dbdict", "export", "--format", "parquet", "-o", str(target), ok=False,
               env={"PYTHONPATH": str(shadow.parent)})
    assert proc.returncode == 2 and not target.exists()
    assert proc.stderr.strip().splitlines() == [
        "error: parquet export needs pandas and pyarrow (pyarrow is missing): "
        "pip install 'dbdict-worker[parquet]'"]
