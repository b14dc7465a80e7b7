"""``dbdict metrics``, run as a user runs it: one job's curves as a table by step, a
selection's as long-form CSV or JSON (the export of learning curves), on PostgreSQL and
SQLite."""
from __future__ import annotations

import csv
import io
import json
import math

from dbdict_worker.store import Store
from tests.support.metricrows import put


def _setup(url: str) -> tuple[int, int, int]:
    """Jobs a and b in table t (a resumed once: attempt 2 redid step 2), c in table u."""
    with Store.open(url, retry_seconds=5) as store:
        a, b = store.enqueue("pkg.exp", [{"lr": 0.1}, {"lr": 0.2}], table="t").created
        (c,) = store.enqueue("pkg.exp", [{"lr": 0.3}], table="u").created
        put(store, [(a, 1, 0, "loss", 1.0), (a, 1, 0, "acc", 0.125), (a, 1, 1, "loss", 0.75),
                    (a, 1, 2, "loss", 0.7), (a, 2, 2, "loss", 0.5), (a, 2, 3, "loss", 0.25)])
        put(store, [(b, 1, 0, "loss", 2.0), (b, 1, 1, "loss", -math.inf)])
        put(store, [(c, 1, 0, "loss", 9.0)])
    return a, b, c


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_one_job_is_a_table_by_step_with_the_latest_attempt(cli):
    a, _, _ = _setup(cli.url)
    out = cli("dbdict", "metrics", str(a)).stdout
    assert out.splitlines() == [
        "step    acc  loss",
        "   0  0.125   1.0",
        "   1         0.75",
        "   2          0.5",
        "   3         0.25",
    ]
    assert cli("dbdict", "metrics", str(a), "--attempt", "1", "--key", "loss").stdout \
        .splitlines() == ["step  loss", "   0   1.0", "   1  0.75", "   2   0.7"]


def test_a_selection_exports_long_csv_with_every_attempt(cli, tmp_path):
    a, b, c = _setup(cli.url)
    rows = _csv(cli("dbdict", "metrics", str(a), str(b), "--key", "loss").stdout)
    assert rows[0] == ["job_id", "attempt", "step", "key", "value", "at"]
    assert [r[:5] for r in rows[1:]] == [
        [str(a), "1", "0", "loss", "1.0"], [str(a), "1", "1", "loss", "0.75"],
        [str(a), "1", "2", "loss", "0.7"], [str(a), "2", "2", "loss", "0.5"],
        [str(a), "2", "3", "loss", "0.25"],
        [str(b), "1", "0", "loss", "2.0"], [str(b), "1", "1", "loss", "-inf"]]
    assert all(r[5].endswith("+00:00") for r in rows[1:])  # UTC times
    # The export of a table's curves, to a file.
    done = cli("dbdict", "metrics", "--table", "u", "-o", str(tmp_path / "c.csv"))
    assert "wrote 1 values" in done.stderr
    assert [r[:5] for r in _csv((tmp_path / "c.csv").read_text())[1:]] == [
        [str(c), "1", "0", "loss", "9.0"]]
    assert {r[0] for r in _csv(cli("dbdict", "metrics", "--where", "lr=0.2").stdout)[1:]} \
        == {str(b)}


def test_json_is_long_form_with_nan_as_asked(cli):
    _, b, _ = _setup(cli.url)
    got = json.loads(cli("dbdict", "metrics", str(b), "--json").stdout)
    assert [(r["step"], r["key"], r["value"]) for r in got] == [
        (0, "loss", 2.0), (1, "loss", "-Infinity")]
    assert set(got[0]) == {"job_id", "attempt", "step", "key", "value", "at"}
    got = json.loads(cli("dbdict", "metrics", str(b), "--format", "json",
                         "--json-nan", "null").stdout)
    assert got[1]["value"] is None


def test_no_metrics_is_a_note_and_exit_0_an_unknown_job_exit_1(cli):
    with Store.open(cli.url, retry_seconds=5) as store:
        (quiet,) = store.enqueue("pkg.exp", [{"lr": 1}]).created
    proc = cli("dbdict", "metrics", str(quiet))
    assert proc.stdout == "" and f"job {quiet}: no metrics reported" in proc.stderr
    proc = cli("dbdict", "metrics", str(quiet), "--format", "csv")
    assert proc.stdout.splitlines() == ["job_id,attempt,step,key,value,at"]
    proc = cli("dbdict", "metrics", "999999", ok=False)
    assert proc.returncode == 1 and "999999" in proc.stderr
    proc = cli("dbdict", "metrics", ok=False)  # no selection at all: a usage error
    assert proc.returncode == 2 and "--all" in proc.stderr
