"""What the dashboard, the report and ``status --watch`` read (dashboard/data.py and
db/dashboard.py), on PostgreSQL and SQLite: the overview's counts, throughput and failures,
pages of jobs sorted by any key and filtered like ``--where``, one job in full, the results."""
from __future__ import annotations

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.dashboard import data
from dbdict_worker.db import dashboard as sql
from dbdict_worker.db.logs import LogTail
from dbdict_worker.errors import NotFound
from tests.support.waiting import wait_for


def _run(store, status: Status, n: int = 1, *, error: str | None = None,
         state: dict | None = None) -> list[int]:
    """Book ``n`` jobs and end them with ``status``; their ids."""
    done = []
    for booking in store.book("w1", "h1", n=n):
        store.finish(booking.token, status, error=error,
                     state={**booking.state, **(state or {})})
        done.append(booking.job.id)
    return done


def test_overview_counts_progress_throughput_and_failures(store):
    store.enqueue("x.y", [{"a": i} for i in range(6)], table="t1")
    _run(store, Status.DONE, 2)
    (failed,) = _run(store, Status.ERR_RUN, error="ValueError: boom")
    ov = data.overview(store)
    (t,) = ov["tables"]
    assert t["table"] == "t1"
    assert t["counts"]["START"] == 3 and t["counts"]["DONE"] == 2
    assert t["counts"]["ERR_RUN"] == 1 and t["counts"]["CANCELED"] == 0
    assert (t["total"], t["finished"]) == (6, 3) and t["progress"] == pytest.approx(0.5)
    assert (t["done_last_hour"], t["failed_last_hour"]) == (2, 1)
    assert len(t["per_minute"]) == data.WINDOW_MINUTES
    # The jobs just ended fall in the last minute's bucket (or the one before, at a boundary).
    recent = t["per_minute"][-2:]
    assert sum(b["done"] for b in recent) == 2 and sum(b["failed"] for b in recent) == 1
    # Measured since the first of them ended (at most 2 minutes ago), not over the hour.
    assert 3 * 30 <= t["rate_per_hour"] <= 3 * 60
    assert t["eta_seconds"] == pytest.approx(3 / t["rate_per_hour"] * 3600)
    assert [(f["id"], f["status"], f["error"]) for f in t["failures"]] == \
        [(failed, "ERR_RUN", "ValueError: boom")]
    assert ov["failed_total"] == 1


def test_overview_of_a_finished_table_has_no_eta_to_wait_for(store):
    store.enqueue("x.y", [{"a": 1}], table="t1")
    _run(store, Status.DONE)
    (t,) = data.overview(store, tables="t1")["tables"]
    assert t["progress"] == 1.0 and t["eta_seconds"] == 0.0


def test_overview_flags_a_worker_whose_heartbeat_is_older_than_the_lease(store):
    store.enqueue("x.y", [{"a": 1}])
    store.register_worker("w-live", "gpu1", 123, 2, None)
    (booking,) = store.book("w-live", "gpu1")
    (w,) = data.overview(store)["workers"]
    assert (w["id"], w["host"], w["slots"], w["jobs"], w["lost"]) == \
        ("w-live", "gpu1", 2, [booking.job.id], False)
    # With a lease shorter than the time since its last heartbeat, it counts as lost.
    wait_for(lambda: data.overview(store, lease=0.2)["workers"][0]["lost"], timeout=10)


def _page_ids(store, **kw) -> list[int]:
    return [r["id"] for r in data.jobs_page(store, **kw)["rows"]]


def test_pages_sorted_by_a_key_put_missing_values_last_and_page_across_them(store):
    xs = [3, None, 1.5, "b", 2, None, -1, "a", 2]
    ids = store.enqueue("x.y", [{"i": i, **({} if x is None else {"x": x})}
                                for i, x in enumerate(xs)]).created
    by_id = dict(zip(ids, xs))
    numbers = sorted((x, i) for i, x in by_id.items() if isinstance(x, (int, float)))
    texts = sorted((x, i) for i, x in by_id.items() if isinstance(x, str))
    missing = [i for i, x in by_id.items() if x is None]
    ascending = [i for _, i in numbers] + [i for _, i in texts] + missing
    descending = [i for _, i in reversed(texts)] + [i for _, i in reversed(numbers)] + missing
    for desc, want in ((False, ascending), (True, descending)):
        got = []
        for offset in range(0, len(xs), 4):  # pages that straddle present and missing values
            got += _page_ids(store, sort="x", desc=desc, offset=offset, limit=4)
        assert got == want, desc
    page = data.jobs_page(store, sort="x", limit=3)
    assert page["total"] == len(xs) and page["total_exact"]
    assert page["columns"][:len(data.PAGE_COLUMNS)] == list(data.PAGE_COLUMNS)
    assert {"i", "x"} <= set(page["columns"])


def test_pages_sorted_by_a_job_column(store):
    ids = store.enqueue("x.y", [{"i": i} for i in range(4)]).created
    store.set_priority(5, ids=[ids[2]])
    assert _page_ids(store, sort="priority", desc=True) == [ids[2], ids[3], ids[1], ids[0]]
    assert _page_ids(store, sort="id", desc=True, limit=2) == [ids[3], ids[2]]


def test_a_filtered_page_holds_the_jobs_where_selects(store):
    ids = store.enqueue("x.y", [{"m": m, "n": n, "s": s} for m in ("a", "b")
                                for n in (1, 2, 3) for s in ("3", "x")]).created
    _run(store, Status.DONE, 4)
    for where, statuses in (([("m", "a")], None), ([("n", 3)], ["START"]),
                            ([("s", "3")], None), ([("m", "b"), ("n", 2)], ["DONE", "START"])):
        want = [j.id for j in store.jobs(where=where, statuses=statuses)]
        got = _page_ids(store, where=where, statuses=statuses, sort="n", limit=1000)
        assert sorted(got) == want and got, (where, statuses)
    # The string "3" and the number 3 stay apart, as in --where.
    assert all(r["s"] == "3" for r in
               data.jobs_page(store, where=[("s", "3")], limit=1000)["rows"])
    assert len(ids) == 12


def test_a_long_string_filter_still_compares_the_whole_value(store):
    long_a, long_b = "p" * 250 + "a", "p" * 250 + "b"
    a, _ = store.enqueue("x.y", [{"s": long_a}, {"s": long_b}]).created
    assert _page_ids(store, where=[("s", long_a)]) == [a]


def test_a_large_filtered_count_is_an_estimate_past_the_exact_bound(pg_store):
    pg_store.enqueue("x.y", [{"m": "a", "i": i} for i in range(30)])
    with pg_store.engine.connect() as conn:
        sel = pg_store.selection(conn, where=[("m", "a")])
        assert sql.count(conn, sel, exact_up_to=100) == (30, True)
        total, exact = sql.count(conn, sel, exact_up_to=5)
        assert not exact and total > 5
        # Without --where filters the count is always exact (the jobs table's indexes).
        assert sql.count(conn, pg_store.selection(conn), exact_up_to=5) == (30, True)


def test_job_detail_has_state_history_logs_and_provenance(store):
    (job_id,) = store.enqueue("x.y", [{"lr": 0.1, "curve": [1.0, 0.5]}]).created
    _run(store, Status.DONE, state={"valid_error": 0.25})
    store.put_log_tails([LogTail(job_id, 1, "stdout", "epoch 1\n", 8)])
    d = data.job_detail(store, job_id)
    assert d["job"]["id"] == job_id and d["job"]["status"] == "DONE"
    assert d["state"] == {"lr": 0.1, "curve": [1.0, 0.5], "valid_error": 0.25}
    assert [e["kind"] for e in d["events"]][:1] == ["enqueue"] or d["events"]
    assert [(log["stream"], log["tail"]) for log in d["logs"]] == [("stdout", "epoch 1\n")]
    assert "user" in d["provenance"] and "git_commit" in d["provenance"]
    with pytest.raises(NotFound):
        data.job_detail(store, job_id + 1000)


def test_results_pick_parameters_metrics_curves_and_the_best_jobs(store):
    states = [{"lr": lr, "model": m} for lr in (0.1, 0.01, 0.001) for m in ("mlp", "cnn")]
    store.enqueue("x.y", states)
    errors = {}
    for n, booking in enumerate(store.book("w1", "h1", n=6)):
        err = 1.0 / (n + 1.5)
        errors[booking.job.id] = err
        store.finish(booking.token, Status.DONE,
                     state={**booking.state, "valid_error": err,
                            "valid_curve": [1.0, err]})
    r = data.results(store, limit=3)
    assert (r["total"], r["rows_shown"]) == (6, 3)
    assert set(r["params"]) == {"lr", "model"} or {"lr", "model"} <= set(r["params"])
    assert "valid_error" in r["metrics"] and r["curves"] == ["valid_curve"]
    assert r["default"]["y"] == "valid_error" and r["minimize"]
    assert r["default"]["x"] in ("lr", "model")
    # The best table ranks every selected job, not only the rows read for the plots.
    best = sorted(errors, key=errors.get)
    assert [row["id"] for row in r["best"]] == best
    kinds = {k["key"]: k["kind"] for k in r["keys"]}
    assert kinds["lr"] == "number" and kinds["model"] == "text"
    assert kinds["valid_curve"] == "curve"
    maximize = data.results(store, metric="lr")
    assert maximize["metric"] == "lr" and maximize["minimize"]
