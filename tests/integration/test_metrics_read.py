"""Reading intermediate metrics: ``Store.metrics`` gives the selected jobs' reported values
as a typed DataFrame, long or wide, on PostgreSQL and SQLite; the dashboard shows a job's
curves and the best jobs' curves."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from dbdict_worker.constants import Status
from dbdict_worker.dashboard import data
from tests.support.metricrows import put

TEXT = "str" if int(pd.__version__.split(".")[0]) >= 3 else "object"
LONG_DTYPES = {"job_id": "int64", "attempt": "int64", "step": "int64", "key": TEXT,
               "value": "float64", "at": "datetime64[us, UTC]"}


def _jobs(store) -> tuple[int, int, int]:
    """Jobs a (lr=0.1) and b (lr=0.2) in table t, c in table u; a is DONE."""
    a, b = store.enqueue("pkg.exp", [{"lr": 0.1}, {"lr": 0.2}], table="t").created
    (c,) = store.enqueue("pkg.exp", [{"lr": 0.1}], table="u").created
    (booked,) = store.book("w1", "node1", tables=["t"], n=1)
    assert booked.job.id == a
    store.finish(booked.token, Status.DONE, state=dict(booked.state, loss=0.5))
    return a, b, c


def _fill(store) -> tuple[int, int, int]:
    a, b, c = _jobs(store)
    # Job a: two attempts; the second resumed from step 1 and redid step 2.
    put(store, [(a, 1, 0, "loss", 1.0), (a, 1, 0, "acc", 0.1), (a, 1, 1, "loss", 0.8),
                (a, 1, 2, "loss", 0.7), (a, 2, 2, "loss", 0.65), (a, 2, 3, "loss", 0.6),
                (a, 2, 3, "acc", 0.4)])
    put(store, [(b, 1, 0, "loss", 2.0), (b, 1, 10, "loss", -math.inf)])
    put(store, [(c, 1, 5, "loss", 9.0)])
    return a, b, c


def test_long_form_is_typed_and_sorted_by_job_step_attempt(store):
    a, b, c = _fill(store)
    df = store.metrics()
    assert list(df.columns) == list(LONG_DTYPES)
    assert {k: str(t) for k, t in df.dtypes.items()} == LONG_DTYPES
    got = list(df[["job_id", "step", "attempt", "key"]].itertuples(index=False, name=None))
    assert got == [(a, 0, 1, "acc"), (a, 0, 1, "loss"), (a, 1, 1, "loss"), (a, 2, 1, "loss"),
                   (a, 2, 2, "loss"), (a, 3, 2, "acc"), (a, 3, 2, "loss"),
                   (b, 0, 1, "loss"), (b, 10, 1, "loss"), (c, 5, 1, "loss")]
    assert df["value"].iloc[8] == -math.inf  # infinities kept
    assert (df["at"].notna()).all()


def test_selection_keys_and_attempt_narrow_the_rows(store):
    a, b, c = _fill(store)
    assert set(store.metrics(table="t")["job_id"]) == {a, b}
    assert set(store.metrics(table="u")["job_id"]) == {c}
    assert set(store.metrics(where={"lr": 0.1})["job_id"]) == {a, c}
    assert set(store.metrics(statuses=["DONE"])["job_id"]) == {a}
    assert set(store.metrics([b, c])["job_id"]) == {b, c}
    assert list(store.metrics([a], keys=["acc"])["value"]) == [0.1, 0.4]
    assert list(store.metrics([a], attempt=2)["step"]) == [2, 3, 3]


def test_wide_form_one_row_per_job_and_step_later_attempt_wins(store):
    a, b, _ = _fill(store)
    wide = store.metrics(table="t", wide=True)
    assert list(wide.index.names) == ["job_id", "step"]
    assert list(wide.columns) == ["acc", "loss"]
    assert list(wide.index) == [(a, 0), (a, 1), (a, 2), (a, 3), (b, 0), (b, 10)]
    assert wide.loc[(a, 2), "loss"] == 0.65  # attempt 2's value for the step both reported
    assert math.isnan(wide.loc[(a, 1), "acc"])
    assert (wide.dtypes == "float64").all()


def test_no_metrics_is_an_empty_typed_frame(store):
    a, _, _ = _jobs(store)
    df = store.metrics([a])
    assert df.empty and {k: str(t) for k, t in df.dtypes.items()} == LONG_DTYPES
    wide = store.metrics([a], wide=True)
    assert wide.empty and list(wide.index.names) == ["job_id", "step"]


def test_pg_nan_is_kept(pg_store):
    (a,) = pg_store.enqueue("pkg.exp", [{"x": 1}]).created
    put(pg_store, [(a, 1, 0, "loss", math.nan), (a, 1, 1, "loss", 1.5)])
    values = list(pg_store.metrics([a])["value"])
    assert math.isnan(values[0]) and values[1] == 1.5


def test_dashboard_job_detail_has_its_curves_over_attempts(store):
    a, b, _ = _fill(store)
    d = data.job_detail(store, a)
    assert d["metrics"] == {"acc": [[0, 0.1], [3, 0.4]],
                            "loss": [[0, 1.0], [1, 0.8], [2, 0.65], [3, 0.6]]}
    assert data.job_detail(store, b)["metrics"]["loss"] == [[0, 2.0], [10, -math.inf]]


def test_dashboard_results_have_the_best_jobs_curves(store):
    ids = store.enqueue("pkg.exp", [{"lr": k / 100} for k in range(30)], table="t").created
    for _ in ids:
        (bk,) = store.book("w1", "node1", tables=["t"], n=1)
        # Lower loss for higher lr: the best jobs are the last ones.
        final = 1.0 - bk.state["lr"]
        store.finish(bk.token, Status.DONE, state=dict(bk.state, loss=final))
        put(store, [(bk.job.id, 1, s, "loss", final + 1.0 / (s + 1)) for s in range(5)]
            + [(bk.job.id, 1, 0, "grad_norm", 3.0)])
    r = data.results(store, table="t")
    assert r["metric"] == "loss"
    curves = r["metric_curves"]
    assert sorted(curves) == ["grad_norm", "loss"]
    shown = [job for job, _ in curves["loss"]]
    assert shown == list(reversed(ids))[:data.CURVE_JOBS]  # best first, bounded
    assert curves["loss"][0][1] == [[s, 1.0 - 0.29 + 1.0 / (s + 1)] for s in range(5)]
    assert len(r["best"]) == 10  # the best table is unchanged


@pytest.mark.parametrize("n, most", [(10, 4), (1001, 100), (3, 10)])
def test_thin_keeps_ends_and_bounds_points(n, most):
    from dbdict_worker.curves import thin

    curve = [(i, float(i)) for i in range(n)]
    got = thin(curve, most)
    assert len(got) == min(n, most) and got[0] == curve[0] and got[-1] == curve[-1]


def test_without_pandas_one_line_names_the_extra(db_url, tmp_path):
    """A Python where pandas cannot be imported: Store.metrics says what to install."""
    shadow = tmp_path / "shadow" / "pandas"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pandas'\", name='pandas')\n")
    code = ("import sys; from dbdict_worker.store import Store; from dbdict_worker.errors "
            "import UsageError\ns = Store.open(sys.argv[1])\n"
            "try:\n    s.metrics()\nexcept UsageError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, db_url], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(shadow.parent)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Store.metrics needs pandas: pip install 'dbdict-worker[pandas]'\n"
