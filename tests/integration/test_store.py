"""The store API on a real database: each test runs on PostgreSQL and on SQLite."""
from __future__ import annotations

import math

import pytest

from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.errors import LostOwnership, NotFound, StateError
from tests.support.waiting import wait_for

TRICKY = {
    "int": 1,
    "float": 1.0,
    "str": "1",
    "yes": True,
    "no": False,
    "nothing": None,
    "list": [1, 2],
    "tuple": (1, "a", (2.5, None)),
    "nested": [[1, 2], [3, float("inf")]],
    "nan": float("nan"),
    "inf": float("inf"),
    "minf": float("-inf"),
    "big": 2**62,
    "neg": -7,
    "tiny": 5e-324,
    "quote": "it's \"quoted\" \\ and % and ; DROP TABLE jobs; --",
    "newline": "two\nlines",
    "κλειδί.ünïcödé": "värde ✓ 日本語",
    "huge": "x" * (1024 * 1024),
}


def same(a, b) -> bool:
    """Equal with the same type, NaN equal to NaN, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_typed_round_trip(store):
    ids = store.enqueue("pkg.exp", [TRICKY]).created
    job, state = store.job(ids[0])
    assert set(state) == set(TRICKY)
    for key, value in TRICKY.items():
        assert same(state[key], value), key
    # The same values come back from a worker's save too.
    booking = store.book("w", "h")[0]
    assert all(same(booking.state[k], v) for k, v in TRICKY.items())
    store.save_state(booking.token, dict(TRICKY, step=3))
    _, saved = store.job(ids[0])
    assert saved["step"] == 3 and same(saved["tuple"], TRICKY["tuple"])


@pytest.mark.parametrize("bad, named", [
    ({"opt": [{"a": 1}]}, "opt"),
    ({"model.obj": object()}, "model.obj"),
    ({"s": {1, 2}}, "s"),
    ({"b": b"bytes"}, "b"),
    ({"c": 1 + 2j}, "c"),
])
def test_unstorable_values_are_refused_with_the_key_named(store, bad, named):
    with pytest.raises(StateError, match=f"'{named}'"):
        store.enqueue("pkg.exp", [{"ok": 1}, bad])
    assert store.jobs() == []  # nothing written, not even the valid first job


def test_reserved_keys_are_refused(store):
    with pytest.raises(StateError, match="dbdict.status"):
        store.enqueue("pkg.exp", [{"dbdict.status": 2}])
    assert store.jobs() == []


def test_duplicates_are_skipped_unless_forced(store):
    sweep = [{"lr": lr, "n": n} for lr in (0.1, 0.01) for n in (1, 2, 3)]
    first = store.enqueue("pkg.exp", sweep)
    assert len(first.created) == 6 and first.skipped == 0
    again = store.enqueue("pkg.exp", sweep)
    assert again.created == [] and again.skipped == 6
    forced = store.enqueue("pkg.exp", sweep, force=True)
    assert len(forced.created) == 6 and set(forced.created).isdisjoint(first.created)
    assert len(store.jobs()) == 12
    # Equality is typed: 1.0 is not 1, and another experiment or table is another job.
    assert len(store.enqueue("pkg.exp", [{"lr": 0.1, "n": 1.0}]).created) == 1
    assert len(store.enqueue("pkg.other", [{"lr": 0.1, "n": 1}]).created) == 1
    assert len(store.enqueue("pkg.exp", [{"lr": 0.1, "n": 1}], table="t2").created) == 1
    # Key order does not make a job different.
    assert store.enqueue("pkg.exp", [{"n": 1, "lr": 0.1}]).skipped == 1


def test_duplicates_within_one_call_and_repeat(store):
    result = store.enqueue("pkg.exp", [{"a": 1}, {"a": 1}, {"a": 2}])
    assert len(result.created) == 2 and result.skipped == 1
    rep = store.enqueue("pkg.exp", [{"a": 3}], repeat=3)
    assert len(rep.created) == 3
    assert sorted(j.replica for j in store.jobs(ids=rep.created)) == [0, 1, 2]
    more = store.enqueue("pkg.exp", [{"a": 3}], repeat=5)
    assert len(more.created) == 2 and more.skipped == 3


def test_booking_order_priority_then_id(store):
    low = store.enqueue("pkg.exp", [{"i": i} for i in range(3)], priority=1.0).created
    high = store.enqueue("pkg.exp", [{"i": i} for i in range(3, 5)], priority=5.0).created
    booked = [b.job.id for b in store.book("w", "h", n=10)]
    assert booked == high + low
    assert store.book("w", "h", n=10) == []
    for b in store.jobs():
        assert b.status == Status.RUNNING and b.attempts == 1 and b.worker_id == "w"


def test_booking_respects_tables(store):
    a = store.enqueue("pkg.exp", [{"i": 1}], table="a").created
    b = store.enqueue("pkg.exp", [{"i": 1}], table="b").created
    assert [x.job.id for x in store.book("w", "h", tables=["b"], n=5)] == b
    assert [x.job.id for x in store.book("w", "h", tables=["a", "b"], n=5)] == a
    with pytest.raises(NotFound, match="no table 'zz'.*tables: a, b"):
        store.book("w", "h", tables=["zz"])


def test_fencing_refuses_a_former_owner(store):
    (job_id,) = store.enqueue("pkg.exp", [{"x": 1}]).created
    old = store.book("w1", "h1")[0]
    # The job is taken away (as the lease rescuer would) and booked by another worker.
    assert store.requeue_stale(0.0)[0].status == Status.START
    new = store.book("w2", "h2")[0]
    assert new.job.id == job_id and new.token.attempt == old.token.attempt + 1
    with pytest.raises(LostOwnership):
        store.save_state(old.token, {"x": 1, "stolen": True})
    with pytest.raises(LostOwnership):
        store.finish(old.token, Status.DONE, state={"x": 1, "result": "old"})
    with pytest.raises(LostOwnership):
        store.requeue_job(old.token)
    assert store.heartbeat("w1", [old.token]) == set()
    # The new owner's writes go through, and the old owner's never landed.
    assert store.heartbeat("w2", [new.token]) == {job_id}
    store.finish(new.token, Status.DONE, state={"x": 1, "result": "new"})
    job, state = store.job(job_id)
    assert job.status == Status.DONE and state == {"x": 1, "result": "new"}
    assert [e.kind for e in store.events(job_id)] == ["booked", "lost", "booked", "finished"]


def test_same_worker_cannot_write_with_a_stale_attempt(store):
    store.enqueue("pkg.exp", [{"x": 1}])
    first = store.book("w", "h")[0]
    store.requeue_stale(0.0)
    second = store.book("w", "h")[0]
    with pytest.raises(LostOwnership):
        store.save_state(first.token, {"x": 2})
    store.save_state(second.token, {"x": 3})
    assert store.job(second.job.id)[1] == {"x": 3}


def test_cancelled_running_job_cannot_be_finished(store):
    (job_id,) = store.enqueue("pkg.exp", [{"x": 1}]).created
    b = store.book("w", "h")[0]
    assert store.cancel(ids=[job_id]) == [job_id]
    with pytest.raises(LostOwnership):
        store.finish(b.token, Status.DONE)
    assert store.job(job_id)[0].status == Status.CANCELED


def test_requeue_incomplete_goes_to_restart_priority_with_its_state(store):
    (job_id,) = store.enqueue("pkg.exp", [{"x": 1}]).created
    b = store.book("w", "h")[0]
    store.requeue_job(b.token, state={"x": 1, "step": 40}, workdir="/tmp/wd")
    job, state = store.job(job_id)
    assert job.status == Status.START and job.priority == RESTART_PRIORITY
    assert state == {"x": 1, "step": 40} and job.workdir == "/tmp/wd"
    again = store.book("w", "h")[0]
    assert again.state["step"] == 40 and again.token.attempt == 2


def test_lost_too_often_becomes_err_run(store):
    (job_id,) = store.enqueue("pkg.exp", [{"x": 1}], max_attempts=2).created
    # A heartbeat of this very millisecond is not older than a lease of 0 (SQLite's clock
    # has millisecond steps): wait until it is.
    store.book("w", "h")
    assert [r.status for r in wait_for(lambda: store.requeue_stale(0.0), 5)] == [Status.START]
    store.book("w", "h")
    assert [r.status for r in wait_for(lambda: store.requeue_stale(0.0), 5)] == [Status.ERR_RUN]
    job, _ = store.job(job_id)
    assert job.status == Status.ERR_RUN and "lost" in job.error and job.losses == 2
    assert store.book("w", "h") == []


def test_stale_requeue_spares_fresh_heartbeats(store):
    store.enqueue("pkg.exp", [{"x": 1}])
    store.book("w", "h")
    assert store.requeue_stale(3600.0) == []
    assert store.jobs(statuses=["RUNNING"])


def test_where_filters_are_typed(store):
    ids = store.enqueue("pkg.exp", [
        {"v": 1}, {"v": 1.0}, {"v": "1"}, {"v": True}, {"v": None}, {"v": [1]},
        {"v": float("nan")}, {"other": 1},
    ]).created
    def match(value):
        return [j.id for j in store.jobs(where={"v": value})]
    assert match(1) == ids[0:2]          # numbers compare as numbers
    assert match(1.0) == ids[0:2]
    assert match("1") == [ids[2]]
    assert match(True) == [ids[3]]
    assert match(None) == [ids[4]]
    assert match([1]) == [ids[5]]
    assert match(float("nan")) == [ids[6]]
    assert match(2) == []
    long_value = "y" * 5000
    (long_id,) = store.enqueue("pkg.exp", [{"v": long_value}]).created
    assert match(long_value) == [long_id]
    assert match(long_value[:-1] + "z") == []


def test_user_commands_on_selections(store):
    ids = store.enqueue("pkg.exp", [{"lr": lr, "n": n} for lr in (0.1, 0.2)
                                    for n in (1, 2)]).created
    assert store.set_priority(9, where={"lr": 0.2}) == ids[2:]
    assert [b.job.id for b in store.book("w", "h", n=1)] == [ids[2]]
    # cancel covers queued and running (ids[2]) jobs alike, and skips finished ones
    assert store.cancel(where={"n": 1}) == [ids[0], ids[2]]
    assert store.cancel(where={"lr": 0.2}) == [ids[3]]
    assert store.requeue(statuses=["CANCELED"], priority=3.0) == [ids[0], ids[2], ids[3]]
    assert {j.priority for j in store.jobs(ids=[ids[0], ids[2], ids[3]])} == {3.0}
    assert store.delete(where={"n": 2}) == [ids[1], ids[3]]
    assert [j.id for j in store.jobs()] == [ids[0], ids[2]]
    counts = store.counts()
    assert counts == {("default", Status.START): 2}
    by = {(v, s): n for v, s, n in store.counts_by("lr")}
    assert by == {(0.1, Status.START): 1, (0.2, Status.START): 1}


def test_missing_table_is_named(store):
    store.enqueue("pkg.exp", [{"x": 1}], table="real")
    with pytest.raises(NotFound, match="no table 'nope'.*tables: real"):
        store.jobs(tables=["nope"])


def test_missing_job(store):
    with pytest.raises(NotFound, match="no job 42"):
        store.job(42)
