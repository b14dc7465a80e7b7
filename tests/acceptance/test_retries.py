"""Retries by failure class, with real commands: a flaky experiment retried to DONE within
its budget (each attempt's error in `dbdict show`, each retry booked no sooner than its
delay by the database clock), a budget that runs out, today's behaviour without --retries,
`dbdict requeue` giving a fresh budget, and a lost job past --max-attempts using a retry."""
from __future__ import annotations

import json
import re
import signal

from dbdict_worker.constants import Status
from dbdict_worker.retrying import JITTER
from tests.support.waiting import wait_for

FLAKY = "dbdict_worker.examples.flaky"
DELAY = re.compile(r"not before now \+ ([0-9.e+-]+) s")


def _enqueue(cli, *args: str) -> int:
    (job_id,) = cli.json("dbdict-enqueue", *args, "--json")["created"]
    return job_id


def test_a_flaky_job_is_retried_to_done_within_its_budget(cli, store, db_url, workers,
                                                          tmp_path):
    counter = tmp_path / "attempts"
    job_id = _enqueue(cli, FLAKY, f"counter={str(counter)!r}", "failures=2",
                      "--retries", "3", "--retry-delay", "0.5s")
    w = workers(db_url, "w", "--until-empty")
    assert w.wait(60) == 0, w.log()
    job, state = store.job(job_id)
    assert (job.status, job.error, state["result"]) == (Status.DONE, None, 3), w.log()
    assert (job.attempts, job.retried, job.retries, job.retry_on) == (3, 2, 3, "error,timeout")
    events = store.events(job_id)
    assert [e.kind for e in events] == ["booked", "retry", "booked", "retry", "booked",
                                        "finished"]
    retries = [e for e in events if e.kind == "retry"]
    for n, e in enumerate(retries, 1):
        assert f"attempt {n} ended ERR_RUN: " in e.detail, e.detail
        assert f"FlakyError: flaky failure {n} of 2; retry {n} of 3 (on error)" in e.detail
    # Doubling from --retry-delay, within the jitter, and booked no sooner (database clock).
    delays = [float(DELAY.search(e.detail).group(1)) for e in retries]
    for n, delay in enumerate(delays):
        assert 0.5 * 2 ** n * (1 - JITTER) <= delay <= 0.5 * 2 ** n * (1 + JITTER), delays
    booked = [e for e in events if e.kind == "booked"]
    for retry, delay, next_booking in zip(retries, delays, booked[1:]):
        assert (next_booking.at - retry.at).total_seconds() >= delay * 0.995
    shown = cli("dbdict", "show", str(job_id)).stdout
    assert "flaky failure 1 of 2" in shown and "flaky failure 2 of 2" in shown, shown
    assert "retries: 2 of 3 used (on error,timeout; first delay 0.5s)" in shown
    record = json.loads(cli("dbdict", "show", str(job_id), "--json").stdout)
    assert (record["retries"], record["retried"], record["retry_delay"]) == (3, 2, 0.5)


def test_a_budget_that_runs_out_leaves_the_last_error_and_requeue_renews_it(
        pg_cli, pg_store, pg_url, workers, tmp_path):
    counter = tmp_path / "attempts"
    job_id = _enqueue(pg_cli, FLAKY, f"counter={str(counter)!r}", "failures=5",
                      "--retries", "2", "--retry-on", "error", "--retry-delay", "0.1s")
    w = workers(pg_url, "w", "--until-empty")
    assert w.wait(60) == 0, w.log()
    job = pg_store.job(job_id)[0]
    assert job.status == Status.ERR_RUN, w.log()
    assert job.error.endswith("FlakyError: flaky failure 3 of 5"), job.error
    assert (job.attempts, job.retried) == (3, 2)
    kinds = [e.kind for e in pg_store.events(job_id)]
    assert kinds.count("retry") == 2 and kinds[-1] == "finished"
    # A user's requeue of a failed job starts a fresh budget: two more retries, enough.
    pg_cli("dbdict", "requeue", "--status", "ERR_RUN", "--where", "failures=5")
    job = pg_store.job(job_id)[0]
    assert (job.status, job.retried, job.error) == (Status.START, 0, None)
    w = workers(pg_url, "w2", "--until-empty")
    assert w.wait(60) == 0, w.log()
    job = pg_store.job(job_id)[0]
    assert (job.status, job.attempts, job.retried) == (Status.DONE, 6, 2), w.log()
    assert counter.read_text() == "6"


def test_without_retries_nothing_changes(cli, store, db_url, workers):
    plain = _enqueue(cli, "dbdict_worker.examples.fail")
    # Retries for other classes do not cover an error.
    other = _enqueue(cli, "dbdict_worker.examples.fail", "steps=1", "--retries", "3",
                     "--retry-on", "timeout,sync")
    w = workers(db_url, "w", "--until-empty")
    assert w.wait(60) == 0, w.log()
    for job_id in (plain, other):
        job = store.job(job_id)[0]
        assert (job.status, job.attempts, job.retried) == (Status.ERR_RUN, 1, 0), w.log()
        assert "deliberate failure" in job.error
        assert [e.kind for e in store.events(job_id)] == ["booked", "finished"]
    assert store.job(plain)[0].retry_on is None
    assert "retries:" not in cli("dbdict", "show", str(plain)).stdout


def test_bad_policy_options_are_refused_in_one_line(pg_cli):
    cli = pg_cli
    for args, words in [(["--retries", "1", "--retry-on", "error,crash"], "crash"),
                        (["--retry-on", "error"], "needs --retries"),
                        (["--timeout", "6 hours"], "not a duration"),
                        (["--stall-after", "0"], "more than 0"),
                        (["--retries", "-1"], "--retries")]:
        proc = cli("dbdict-enqueue", "dbdict_worker.examples.add", *args, ok=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and proc.stdout == "", (args, proc.stderr)
    assert cli.json("dbdict", "list", "--json") == []  # nothing was enqueued


def test_a_lost_job_past_max_attempts_uses_a_retry_when_lost_is_listed(cli, store, db_url,
                                                                        workers):
    retried = _enqueue(cli, "dbdict_worker.examples.checkpoint", "total=100000", "sleep=0.05",
                       "--max-attempts", "1", "--retries", "1", "--retry-on", "lost",
                       "--retry-delay", "0.2s")
    final = _enqueue(cli, "dbdict_worker.examples.checkpoint", "total=100001", "sleep=0.05",
                     "--max-attempts", "1", "--retries", "1")  # error,timeout: not lost
    # A short lease: the orphaned jobs stop themselves soon after their worker dies.
    w = workers(db_url, "w", "--slots", "2", "--heartbeat", "0.5", "--lease", "2")
    wait_for(lambda: all(store.job(i)[0].status == Status.RUNNING for i in (retried, final)),
             30, "both jobs to run")
    w.signal(signal.SIGKILL)
    w.wait(10)

    def rescued() -> bool:  # once past the lease (database clock), both come out of RUNNING
        cli("dbdict", "requeue", "--stale", "--lease", "2")
        return all(store.job(i)[0].status != Status.RUNNING for i in (retried, final))
    wait_for(rescued, 30, "the dead worker's jobs to be rescued", interval=0.5)
    job = store.job(retried)[0]
    assert (job.status, job.losses, job.retried) == (Status.START, 1, 1)
    assert job.not_before is not None
    (lost,) = [e for e in store.events(retried) if e.kind == "lost"]
    assert "(loss 1/1); retry 1 of 1 in " in lost.detail and lost.detail.endswith("now START")
    job = store.job(final)[0]
    assert (job.status, job.losses, job.retried) == (Status.ERR_RUN, 1, 0)
    assert "stopped heartbeating (loss 1/1)" in job.error
