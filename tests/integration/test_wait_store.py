"""Store.wait (waiting.py) on a real database: it ends when no selected job is START or
RUNNING, reports progress with an ETA, and gives up at its timeout. The "sleep" between two
counts is where the test plays the worker, so every step is deterministic."""
from __future__ import annotations

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.errors import NotFound
from dbdict_worker.waiting import WaitResult


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_waits_until_all_ended_and_reports_eta(store):
    store.enqueue("pkg.exp", [{"x": i} for i in range(4)], table="t")
    store.enqueue("pkg.exp", [{"x": 9}], table="other")  # not selected: never ends
    clock, looks = Clock(), []

    def sleep(seconds: float) -> None:  # between counts, one job ends
        clock.now += seconds
        (b,) = store.book("w", "h", tables=["t"], n=1)
        store.finish(b.token, Status.DONE if b.job.id != 2 else Status.ERR_RUN, error="x")

    result = store.wait(tables="t", interval=2.0, on_progress=looks.append, clock=clock,
                        sleep=sleep)
    assert result == WaitResult({Status.DONE: 3, Status.ERR_RUN: 1})
    assert not result.ok and result.failed == 1 and result.describe() == "3 DONE, 1 ERR_RUN"
    assert [p.result.pending for p in looks] == [4, 3, 2, 1, 0]
    assert looks[0].eta is None  # nothing ended yet: no rate
    assert looks[2].eta == pytest.approx(4.0)  # one job ends every 2 s, two left
    assert clock.now == 8.0


def test_timeout_and_empty_selection(store):
    store.enqueue("pkg.exp", [{"x": 1}], table="t")
    clock = Clock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    result = store.wait(tables="t", timeout=5.0, clock=clock, sleep=sleep)
    assert result.timed_out and result.pending == 1 and not result.ok
    assert clock.now == 5.0  # the last sleep is cut to the timeout
    empty = store.wait(tables="t", where=[("x", 2)], clock=clock, sleep=sleep)
    assert empty.total == 0 and empty.ok
    store.cancel(tables="t")  # a cancelled job is not DONE
    cancelled = store.wait(tables="t", clock=clock, sleep=sleep)
    assert cancelled.failed == 1 and not cancelled.ok and cancelled.describe() == "1 CANCELED"
    with pytest.raises(NotFound):
        store.wait(tables="nosuch", clock=clock, sleep=sleep)
