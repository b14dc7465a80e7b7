"""The bound on restarts without progress (worker/restarts.py), without a database."""
from __future__ import annotations

import dataclasses

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.db.models import Booking, Job, Token
from dbdict_worker.errors import UsageError
from dbdict_worker.job.process import Outcome
from dbdict_worker.worker import restarts
from dbdict_worker.worker.restarts import (DELAY_BASE_ENV, DELAY_CAP_FACTOR, JITTER, Restart,
                                           after_run, made_progress, restart_delay)


def _booking(state: dict, *, n: int = 0, limit: int = 2) -> Booking:
    job = Job(id=7, table="t", experiment="pkg.exp", status=Status.RUNNING, priority=2.0,
              attempts=1, losses=0, max_attempts=3, replica=0, created_at=None,
              updated_at=None, booked_at=None, heartbeat_at=None, finished_at=None,
              worker_id="w", host="h", workdir=None, error=None, restarts=n,
              max_restarts=limit)
    return Booking(job, Token(7, "w", 1), state)


def test_the_delay_doubles_up_to_its_cap_within_the_jitter():
    mid = [restart_delay(n, 5.0, rand=lambda: 0.5) for n in range(1, 10)]
    assert mid == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert 5.0 * DELAY_CAP_FACTOR == 300
    assert restart_delay(1, 5.0, rand=lambda: 0.0) == pytest.approx(5 * (1 - JITTER))
    assert restart_delay(1, 5.0, rand=lambda: 1.0) == pytest.approx(5 * (1 + JITTER))
    # Whatever the jitter, each delay before the cap is longer than the one before.
    assert restart_delay(1, 5.0, rand=lambda: 1.0) < restart_delay(2, 5.0, rand=lambda: 0.0)
    assert restart_delay(10_000, 5.0, rand=lambda: 0.5) == 300


def test_progress_is_a_change_of_the_stored_values():
    assert not made_progress({"x": 1, "dbdict.id": 7}, {"x": 1})
    assert not made_progress({"x": float("nan"), "l": [1, 2]}, {"l": [1, 2], "x": float("nan")})
    assert made_progress({"x": 1}, {"x": 1.0})
    assert made_progress({"x": 1}, {"x": True})
    assert made_progress({"x": 1}, {"x": 1, "step": 1})


def test_after_run_counts_only_incomplete_without_progress():
    ended = Outcome(Status.START, {"x": 1})
    assert after_run(_booking({"x": 1}), ended, 5.0)[0] == ended
    outcome, restart = after_run(_booking({"x": 1}, n=1), ended, 5.0)
    assert outcome == ended and restart.restarts == 2 and restart.delay > 0
    assert "restart 2 of at most 2" in restart.reason
    # Past the limit: ERR_RUN, saying why.
    outcome, restart = after_run(_booking({"x": 1}, n=2), ended, 5.0)
    assert outcome.status == Status.ERR_RUN and restart == Restart()
    assert outcome.error == ("returned INCOMPLETE 3 times in a row without saving progress "
                             "(max_restarts 2)")
    # Progress resets the count; a stop leaves it; other statuses are not touched.
    assert after_run(_booking({"x": 1}, n=2), Outcome(Status.START, {"x": 2}), 5.0) == \
        (Outcome(Status.START, {"x": 2}), Restart(restarts=0))
    stopped = dataclasses.replace(ended, stopped=True)
    assert after_run(_booking({"x": 1}, n=2), stopped, 5.0) == (stopped, Restart())
    done = Outcome(Status.DONE, {"x": 1})
    assert after_run(_booking({"x": 1}, n=2), done, 5.0) == (done, Restart())


def test_the_base_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(DELAY_BASE_ENV, raising=False)
    assert restarts.delay_base_from_env() == restarts.DEFAULT_DELAY_BASE
    monkeypatch.setenv(DELAY_BASE_ENV, "0.2")
    assert restarts.delay_base_from_env() == 0.2
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv(DELAY_BASE_ENV, bad)
        with pytest.raises(UsageError, match=DELAY_BASE_ENV):
            restarts.delay_base_from_env()
