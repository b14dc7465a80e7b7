"""Batched completions (Store.finish_many): many booked jobs end in one transaction, each only
if its worker still owns it, with its event and its final state; on PostgreSQL and SQLite."""
from __future__ import annotations

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.db.models import Completion
from dbdict_worker.errors import LostOwnership


def _booked(store, n: int, worker: str = "w1"):
    store.enqueue("exp", [{"i": i, "keep": "x"} for i in range(n)], table="t")
    return store.book(worker, "host", tables=["t"], n=n)


def test_a_batch_ends_each_job_with_its_status_state_error_event_and_workdir(store):
    a, b, c = _booked(store, 3)
    written = store.finish_many([
        Completion(a.token, Status.DONE, state={"i": 0, "loss": 0.5}, workdir="/w/a"),
        Completion(b.token, Status.ERR_RUN, error="boom"),
        Completion(c.token, Status.DONE),
    ])
    assert sorted(written) == sorted(x.job.id for x in (a, b, c))
    job_a, state_a = store.job(a.job.id)
    assert (job_a.status, job_a.workdir, state_a["loss"]) == (Status.DONE, "/w/a", 0.5)
    assert "keep" not in state_a  # a final state replaces the whole state
    job_b, state_b = store.job(b.job.id)
    assert (job_b.status, job_b.error, state_b["keep"]) == (Status.ERR_RUN, "boom", "x")
    job_c, state_c = store.job(c.job.id)
    assert job_c.status == Status.DONE and state_c == {"i": 2, "keep": "x"}
    assert job_c.finished_at is not None
    for job_id, detail in ((a.job.id, "DONE"), (b.job.id, "ERR_RUN: boom")):
        finished = [e for e in store.events(job_id) if e.kind == "finished"]
        assert [(e.worker_id, e.detail) for e in finished] == [("w1", detail)]


def test_a_job_no_longer_owned_is_left_alone_and_the_others_are_written(store):
    a, b, c = _booked(store, 3)
    store.cancel(ids=[b.job.id, c.job.id])
    store.requeue(ids=[c.job.id])
    (c_again,) = store.book("w2", "host", tables=["t"], n=1)  # a later attempt, another worker
    written = store.finish_many([Completion(x.token, Status.DONE, state={"done": True})
                                 for x in (a, b, c)])
    assert written == [a.job.id]
    assert store.job(b.job.id)[0].status == Status.CANCELED
    job_c, state_c = store.job(c.job.id)
    assert (job_c.status, job_c.worker_id) == (Status.RUNNING, "w2")
    assert "done" not in state_c  # a lost job's state is never touched
    assert not [e for e in store.events(c.job.id) if e.kind == "finished"]
    # The new owner's finish still holds: the fencing token is the attempt.
    assert store.finish_many([Completion(c_again.token, Status.DONE)]) == [c.job.id]


def test_finish_of_a_lost_job_raises_and_bad_batches_are_refused(store):
    a, b = _booked(store, 2)
    store.cancel(ids=[a.job.id])
    with pytest.raises(LostOwnership):
        store.finish(a.token, Status.DONE)
    with pytest.raises(ValueError):
        store.finish_many([Completion(b.token, Status.START)])
    with pytest.raises(ValueError):
        store.finish_many([Completion(b.token, Status.DONE), Completion(b.token, Status.DONE)])
    assert store.job(b.job.id)[0].status == Status.RUNNING  # nothing written by a refusal
    assert store.finish_many([]) == []


def test_finish_and_book_ends_the_owned_jobs_and_books_the_next_ones(store):
    store.enqueue("exp", [{"i": i} for i in range(5)], table="t")
    a, b = store.book("w1", "host", tables=["t"], n=2)
    store.cancel(ids=[b.job.id])
    written, booked = store.finish_and_book(
        [Completion(a.token, Status.DONE), Completion(b.token, Status.ERR_RUN, error="x")],
        "host", tables=["t"], n=2)
    assert written == [a.job.id]
    assert store.job(a.job.id)[0].status == Status.DONE
    assert store.job(b.job.id)[0].status == Status.CANCELED  # not ours: untouched
    assert [x.job.id for x in booked] == [a.job.id + 2, a.job.id + 3]
    assert all(x.job.status == Status.RUNNING and x.token.worker_id == "w1" for x in booked)
    assert [x.state["i"] for x in booked] == [2, 3]  # the state comes with the booking
    for x in booked:
        assert [e.kind for e in store.events(x.job.id)] == ["booked"]
    # The last ends with nothing left to book: the ends are still written.
    (last,) = store.book("w1", "host", tables=["t"], n=5)
    held = [*booked, last]
    written, booked = store.finish_and_book(
        [Completion(x.token, Status.DONE) for x in held], "host", tables=["t"], n=3)
    assert sorted(written) == sorted(x.job.id for x in held)
    assert booked == []
    assert store.counts(tables=["t"]) == {("t", Status.DONE): 4, ("t", Status.CANCELED): 1}
    with pytest.raises(ValueError):
        store.finish_and_book([Completion(last.token, Status.DONE, state={"x": 1})], "host",
                              tables=["t"])
