"""The worker's side of intermediate metrics and pruning in the store, on PostgreSQL and
SQLite: Store.put_metrics / metric_rows (the ``metrics`` table), Store.request_prune, the
heartbeat that tells a worker which of its jobs to prune, and PRUNED as a status."""
from __future__ import annotations

from dbdict_worker.constants import Status
from dbdict_worker.db.models import MetricRow


def _rows(store, ids, **kw):
    return [(r.job_id, r.attempt, r.step, r.key, r.value) for r in store.metric_rows(ids, **kw)]


def test_metrics_round_trip_ordered_by_job_attempt_step_key(store):
    a, b = store.enqueue("x.y", [{"i": 1}, {"i": 2}]).created
    assert store.put_metrics([MetricRow(b, 1, 2, "loss", 0.5), MetricRow(a, 1, 1, "loss", 1.0),
                              MetricRow(a, 1, 1, "acc", 0.1), MetricRow(a, 2, 2, "loss", 0.7),
                              MetricRow(a, 1, 0, "loss", None)]) == 5
    assert _rows(store, [a, b]) == [(a, 1, 0, "loss", None), (a, 1, 1, "acc", 0.1),
                                    (a, 1, 1, "loss", 1.0), (a, 2, 2, "loss", 0.7),
                                    (b, 1, 2, "loss", 0.5)]
    assert _rows(store, [a], attempt=2) == [(a, 2, 2, "loss", 0.7)]
    assert _rows(store, [a, b], keys=["acc"]) == [(a, 1, 1, "acc", 0.1)]
    assert store.metric_rows([]) == [] and store.put_metrics([]) == 0
    assert all(r.at is not None and r.at.tzinfo is not None for r in store.metric_rows([a]))


def test_a_repeated_step_and_key_keeps_the_latest_value_even_within_one_batch(store):
    (a,) = store.enqueue("x.y", [{"i": 1}]).created
    store.put_metrics([MetricRow(a, 1, 5, "loss", 1.0), MetricRow(a, 1, 5, "loss", 0.9)])
    store.put_metrics([MetricRow(a, 1, 5, "loss", 0.8)])
    assert _rows(store, [a]) == [(a, 1, 5, "loss", 0.8)]


def test_rows_of_deleted_jobs_are_left_out_and_a_delete_removes_a_jobs_rows(store):
    a, b = store.enqueue("x.y", [{"i": 1}, {"i": 2}]).created
    store.put_metrics([MetricRow(a, 1, 1, "loss", 1.0), MetricRow(b, 1, 1, "loss", 2.0)])
    store.delete(ids=[a])
    assert store.put_metrics([MetricRow(a, 1, 2, "loss", 0.5),
                              MetricRow(b, 1, 2, "loss", 1.5)]) == 1
    assert _rows(store, [a, b]) == [(b, 1, 1, "loss", 2.0), (b, 1, 2, "loss", 1.5)]


def test_a_large_batch_is_one_call_and_nan_and_infinities_survive(store):
    (a,) = store.enqueue("x.y", [{"i": 1}]).created
    rows = [MetricRow(a, 1, s, k, float(s)) for s in range(1500) for k in ("x", "y")]
    rows.append(MetricRow(a, 1, 9999, "inf", float("inf")))
    assert store.put_metrics(rows) == 3001
    got = store.metric_rows([a], keys=["inf"])
    assert got[0].value == float("inf") and len(store.metric_rows([a])) == 3001


def test_request_prune_flags_running_jobs_ends_queued_ones_and_leaves_the_rest(store):
    running, queued, done = store.enqueue("x.y", [{"i": i} for i in range(3)]).created
    booked = {b.job.id: b for b in store.book("w", "h", n=3)}
    # Put `queued` back to START (not bookable yet) and finish `done`.
    store.requeue_job(booked[queued].token, reason="back", delay=3600)
    store.finish(booked[done].token, Status.DONE)
    assert store.request_prune([running, queued, done, 999999], reason="median") == \
        sorted([running, queued])
    assert store.job(queued)[0].status == Status.PRUNED
    assert store.job(queued)[0].finished_at is not None
    job = store.job(running)[0]
    assert job.status == Status.RUNNING and job.prune_requested
    assert store.job(done)[0].status == Status.DONE
    assert store.request_prune([running]) == []  # already flagged
    kinds = [(e.kind, e.detail) for e in store.events(running)]
    assert ("prune", "median; its worker stops it") in kinds
    assert store.book("w", "h") == []  # a PRUNED job is never booked
    # The heartbeat tells the owner, without another statement.
    drain, owned, prune = store.worker_beat("w", "running", [booked[running].token])
    assert owned == {running} and prune == {running}
    assert store.heartbeat("w", [booked[running].token]) == {running}


def test_the_owner_ends_a_pruned_job_pruned_and_a_requeue_clears_the_flag(store):
    a, b = store.enqueue("x.y", [{"i": 1}, {"i": 2}]).created
    ba, bb = store.book("w", "h", n=2)
    store.request_prune([a, b])
    store.finish(ba.token, Status.PRUNED, state={"i": 1, "step": 3})
    job, state = store.job(a)
    assert job.status == Status.PRUNED and state["step"] == 3
    # Stopped by its worker before the prune was acted on: requeued, the flag cleared.
    store.requeue_job(bb.token, reason="stopped")
    assert not store.job(b)[0].prune_requested
    (again,) = store.book("w", "h")
    assert store.worker_beat("w", "running", [again.token])[2] == set()
    # A user may requeue a PRUNED job; PRUNED counts and waits like an end.
    assert store.requeue(ids=[a]) == [a]
    assert store.job(a)[0].status == Status.START and not store.job(a)[0].prune_requested
    store.request_prune([a])
    assert store.counts()[("default", Status.PRUNED)] == 1
    result = store.wait(ids=[a], timeout=5)
    assert result.ok and result.failed == 0 and "1 PRUNED" in result.describe()


def test_the_dashboard_and_watch_count_pruned_jobs_as_ended_not_failed(store):
    from dbdict_worker.cli.watch import ORDER
    from dbdict_worker.dashboard import data
    from dbdict_worker.dashboard.pages import STATUS_ORDER

    store.enqueue("x.y", [{"a": i} for i in range(4)], table="t1")
    first, second = store.book("w", "h", n=2)
    store.finish(first.token, Status.DONE)
    store.finish(second.token, Status.PRUNED)
    queued = store.jobs(statuses=[Status.START], limit=1)[0].id
    assert store.request_prune([queued]) == [queued]  # a queued one: PRUNED at once
    (t,) = data.overview(store)["tables"]
    assert t["counts"]["PRUNED"] == 2 and t["counts"]["START"] == 1
    assert (t["total"], t["finished"]) == (4, 3)
    assert (t["done_last_hour"], t["failed_last_hour"]) == (3, 0)
    assert "PRUNED" in STATUS_ORDER and Status.PRUNED in ORDER
