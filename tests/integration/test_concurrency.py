"""Several processes at once: booking never gives a job twice, racing enqueues never
duplicate a sweep. Real processes, real connections."""
from __future__ import annotations

import multiprocessing as mp
from collections import Counter

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.store import Store


def _book_until_empty(url: str, worker: str, start, out) -> None:
    store = Store.open(url, retry_seconds=30)
    start.wait(30)
    mine = []
    while True:
        got = store.book(worker, "host", n=7)
        if not got:
            break
        for b in got:
            store.finish(b.token, Status.DONE, state=dict(b.state, by=worker))
            mine.append(b.job.id)
    store.close()
    out.put((worker, mine))


def _enqueue_sweep(url: str, start, out) -> None:
    store = Store.open(url, retry_seconds=30)
    start.wait(30)
    result = store.enqueue("pkg.exp", [{"i": i, "lr": 0.1} for i in range(100)])
    store.close()
    out.put((len(result.created), result.skipped))


def _run_all(target, argsets, timeout=240):
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, start, out)) for a in argsets]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


@pytest.mark.slow
def test_eight_bookers_take_every_job_exactly_once(pg_url):
    store = Store.open(pg_url)
    created = store.enqueue("pkg.exp", [{"i": i} for i in range(5000)]).created
    results = _run_all(_book_until_empty, [(pg_url, f"w{k}") for k in range(8)])
    seen = Counter(i for _, ids in results for i in ids)
    assert sorted(seen) == sorted(created)
    assert max(seen.values()) == 1
    assert sum(1 for _, ids in results if ids) > 1  # the work really was shared
    assert store.counts() == {("default", Status.DONE): 5000}
    # Each job's final state names the single worker that booked it.
    by = {b: n for b, _, n in store.counts_by("by")}
    assert sum(by.values()) == 5000
    store.close()


def test_bookers_on_sqlite_take_every_job_exactly_once(sqlite_url):
    store = Store.open(sqlite_url)
    created = store.enqueue("pkg.exp", [{"i": i} for i in range(400)]).created
    results = _run_all(_book_until_empty, [(sqlite_url, f"w{k}") for k in range(3)])
    seen = Counter(i for _, ids in results for i in ids)
    assert sorted(seen) == sorted(created) and max(seen.values()) == 1
    store.close()


@pytest.mark.parametrize("backend", ["pg_url", "sqlite_url"])
def test_racing_enqueues_of_one_sweep_leave_it_once(request, backend):
    url = request.getfixturevalue(backend)
    Store.open(url).close()  # schema first (SQLite creates it on first open)
    results = _run_all(_enqueue_sweep, [(url,), (url,)])
    assert sorted(results) == [(0, 100), (100, 0)] or sum(c for c, _ in results) == 100
    store = Store.open(url)
    assert len(store.jobs()) == 100
    store.close()
