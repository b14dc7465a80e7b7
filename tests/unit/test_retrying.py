"""Retries by failure class, without a database: the policy checked at enqueue
(dbdict_worker/retrying.py), the delays, and the worker's decision after an attempt
(dbdict_worker/worker/retries.py)."""
from __future__ import annotations

import dataclasses

import pytest

from dbdict_worker import retrying
from dbdict_worker.backoff import doubling
from dbdict_worker.constants import DEFAULT_RETRY_DELAY, Status
from dbdict_worker.db.models import Booking, Job, Token
from dbdict_worker.errors import UsageError
from dbdict_worker.job.process import Outcome
from dbdict_worker.retrying import (JITTER, RETRY_DELAY_CAP, check_policy, next_retry,
                                    retry_delay)
from dbdict_worker.worker.restarts import Restart
from dbdict_worker.worker.retries import after_run, failure_class

MID = lambda: 0.5  # noqa: E731  (no jitter)


def _booking(*, retries=0, retried=0, retry_on=None, retry_delay=None, restarts=0,
             attempt=2) -> Booking:
    job = Job(id=7, table="t", experiment="pkg.exp", status=Status.RUNNING, priority=1.0,
              attempts=attempt, losses=0, max_attempts=3, replica=0, created_at=None,
              updated_at=None, booked_at=None, heartbeat_at=None, finished_at=None,
              worker_id="w", host="h", workdir=None, error=None, restarts=restarts,
              max_restarts=2, retries=retries, retried=retried, retry_on=retry_on,
              retry_delay=retry_delay)
    return Booking(job, Token(7, "w", attempt), {"x": 1})


def test_policy_defaults_and_refusals():
    assert check_policy(None) == {"retries": 0, "retry_on": None}
    # --retries alone retries the experiment's errors and its time limits.
    assert check_policy({"retries": 3})["retry_on"] == "error,timeout"
    got = check_policy({"retries": 2, "retry_on": "SYNC, lost,error,lost",
                        "retry_delay": "90s", "timeout": "6h", "stall_after": 900})
    assert got == {"retries": 2, "retry_on": "error,lost,sync", "retry_delay": 90.0,
                   "timeout": 21600.0, "stall_after": 900.0}
    assert check_policy({"retries": 1, "retry_on": ["timeout"]})["retry_on"] == "timeout"
    for bad, words in [({"retries": 1, "retry_on": "error,crash"}, "unknown failure class"),
                       ({"retry_on": "error"}, "needs --retries"),
                       ({"retry_delay": 5}, "needs --retries"),
                       ({"retries": -1}, "--retries"),
                       ({"retries": 1, "retry_on": ","}, "--retry-on"),
                       ({"timeout": "0s"}, "--timeout: must be more than 0"),
                       ({"stall_after": "soon"}, "--stall-after")]:
        with pytest.raises(UsageError, match=words) as info:
            check_policy(bad)
        assert "\n" not in str(info.value)


def test_the_delay_doubles_from_the_base_up_to_the_cap_with_jitter():
    assert [retry_delay(n, 60, MID) for n in range(1, 9)] == \
        [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert retry_delay(1, None, MID) == DEFAULT_RETRY_DELAY
    assert retry_delay(3, 2 * RETRY_DELAY_CAP, MID) == 2 * RETRY_DELAY_CAP  # a larger base
    assert retry_delay(1, 10, lambda: 0.0) == pytest.approx(10 * (1 - JITTER))
    assert retry_delay(1, 10, lambda: 0.999999) == pytest.approx(10 * (1 + JITTER))
    assert retry_delay(5, 0, MID) == 0
    # The shared formula: the doubling of the other backoffs.
    assert [doubling(n, 2.0, 300.0) for n in (0, 1, 2, 8, 9, 10**6)] == [2, 2, 4, 256, 300, 300]


def test_next_retry_needs_a_listed_class_and_budget_left():
    policy = dict(retries=2, retry_on="error,lost", retry_delay_base=1.0, rand=MID)
    assert next_retry("error", retried=0, **policy) == retrying.Retry(1, 2, 1.0)
    assert next_retry("lost", retried=1, **policy) == retrying.Retry(2, 2, 2.0)
    assert next_retry("error", retried=2, **policy) is None  # used up
    assert next_retry("timeout", retried=0, **policy) is None  # not listed
    assert next_retry("error", retries=0, retried=0, retry_on=None,
                      retry_delay_base=None) is None  # the default: nothing
    assert retrying.Retry(1, 3, 61.234).describe() == "retry 1 of 3 in 61.2 s"
    with pytest.raises(ValueError):
        next_retry("crash", retried=0, **policy)


def test_failure_classes_of_outcomes():
    assert failure_class(Outcome(Status.ERR_RUN, {}, error="ValueError: boom")) == "error"
    assert failure_class(Outcome(Status.ERR_RUN, {}, error="killed by signal 9 (SIGKILL)",
                                 returncode=-9)) == "error"
    assert failure_class(Outcome(Status.ERR_RUN, {}, error="timeout after 6h",
                                 limit="timeout")) == "timeout"
    assert failure_class(Outcome(Status.ERR_RUN, {}, error="stalled: ...",
                                 limit="stall")) == "timeout"
    assert failure_class(Outcome(Status.ERR_SYNC, {}, error="rsync failed")) == "sync"
    for status in (Status.DONE, Status.START, Status.ERR_START):
        assert failure_class(Outcome(status, {})) is None


def test_after_run_retries_a_listed_failure_and_keeps_the_error_for_history():
    boom = Outcome(Status.ERR_RUN, {"x": 2}, error="ValueError: boom")
    outcome, restart = after_run(_booking(retries=3, retried=1, retry_on="error",
                                          retry_delay=10.0), boom, 5.0, rand=MID)
    assert outcome == dataclasses.replace(boom, status=Status.START, error=None)
    assert restart == Restart(delay=20.0, restarts=None, retried=2, event="retry",
                              reason="attempt 2 ended ERR_RUN: ValueError: boom; "
                                     "retry 2 of 3 (on error)")


def test_after_run_lets_the_last_failure_stand():
    boom = Outcome(Status.ERR_RUN, {}, error="ValueError: boom")
    timeout = Outcome(Status.ERR_RUN, {}, error="timeout after 2s", limit="timeout")
    sync = Outcome(Status.ERR_SYNC, {}, error="rsync: no route")
    # Budget used up, class not listed, no retries at all (today's behaviour): unchanged.
    for booking, outcome in [(_booking(retries=2, retried=2, retry_on="error"), boom),
                             (_booking(retries=2, retry_on="error"), timeout),
                             (_booking(retries=2, retry_on="timeout"), boom),
                             (_booking(retries=2, retry_on="error,timeout"), sync),
                             (_booking(), boom), (_booking(), timeout)]:
        assert after_run(booking, outcome, 5.0) == (outcome, Restart())
    assert after_run(_booking(retries=1, retry_on="sync"), sync, 5.0, rand=MID)[1].retried == 1


def test_too_many_restarts_without_progress_are_not_retried():
    # restarts.py's own ERR_RUN (INCOMPLETE without progress past max_restarts) has its
    # own budget: a retry of class error does not apply to it.
    outcome, restart = after_run(_booking(retries=3, retry_on="error", restarts=2),
                                 Outcome(Status.START, {"x": 1}), 5.0)
    assert outcome.status == Status.ERR_RUN and restart == Restart()
    assert "without saving progress" in outcome.error
