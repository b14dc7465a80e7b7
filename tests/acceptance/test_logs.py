"""Logs from anywhere, with real workers and real commands on PostgreSQL: ``dbdict logs -f``
follows a job running under a worker in another process, the kept tail is the last bytes of
the output, ``dbdict show`` prints a failed job's traceback, each attempt keeps its own
output, and a worker's log writes stay under one per second per busy job."""
from __future__ import annotations

import subprocess
import threading
import time

import sqlalchemy as sa

from dbdict_worker.constants import Status
from tests.acceptance.conftest import BIN
from tests.support.waiting import wait_for

CODE = '''
import sys, time
from dbdict_worker import COMPLETE, INCOMPLETE


def slow(state, channel):
    for i in range(state["lines"]):
        print(f"line {i}", flush=True)
        time.sleep(state["every"])


def big(state, channel):
    for i in range(state["lines"]):
        print(f"{i:09d}")                       # 10 bytes a line
    print("the last words", file=sys.stderr)


def fail(state, channel):
    print("about to fail", flush=True)
    raise ValueError("boom from logexp")


def twice(state, channel):
    if state.get("step", 0) == 0:
        print("first run", flush=True)
        time.sleep(state.get("pause", 0))
        state["step"] = 1
        channel.save()
        return INCOMPLETE
    print("second run", flush=True)
    return COMPLETE


def busy(state, channel):
    end, i = time.time() + state["seconds"], 0
    while time.time() < end:
        print(f"out {i}", flush=True)
        print(f"err {i}", file=sys.stderr, flush=True)
        i += 1
        time.sleep(0.02)
'''

FAST = ("--heartbeat", "0.5", "--lease", "5")


def _code(tmp_path) -> dict[str, str]:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "logexp.py").write_text(CODE)
    return {"PYTHONPATH": str(code)}


def _status(store, job_id: int) -> Status:
    return store.job(job_id)[0].status


def test_logs_follow_sees_lines_while_the_job_runs_and_exits_0_at_its_end(
        pg_store, pg_url, pg_cli, tmp_path, workers):
    env = _code(tmp_path)
    (job_id,) = pg_store.enqueue("logexp.slow", [{"lines": 20, "every": 0.5}]).created
    follower = subprocess.Popen(
        [str(BIN / "dbdict"), "logs", "-f", str(job_id)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**env, "DBDICT_DB": pg_url, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path)
    seen: list[tuple[str, Status]] = []  # each line, with the job's status when it came

    def read() -> None:
        for line in follower.stdout:
            seen.append((line.decode(), _status(pg_store, job_id)))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    w = workers(pg_url, "w", *FAST, "--until-empty", env=env)
    try:
        assert follower.wait(60) == 0, follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
    reader.join(10)
    assert w.wait(30) == 0, w.log()
    assert _status(pg_store, job_id) == Status.DONE
    assert "".join(line for line, _ in seen) == "".join(f"line {i}\n" for i in range(20))
    # Lines arrived while the job still ran, not only once it had ended.
    assert seen[0][1] == Status.RUNNING, seen


def test_the_final_tail_is_the_last_bytes_of_a_long_output(pg_store, pg_url, pg_cli,
                                                           tmp_path, workers):
    env = _code(tmp_path)
    (job_id,) = pg_store.enqueue("logexp.big", [{"lines": 500}]).created
    w = workers(pg_url, "w", *FAST, "--until-empty", "--log-tail", "1000", env=env)
    assert w.wait(30) == 0, w.log()
    printed = "".join(f"{i:09d}\n" for i in range(500))
    out = pg_cli("dbdict", "logs", str(job_id))
    assert out.stdout == printed[-1000:]
    assert "[... 4000 bytes not kept ...]" in out.stderr
    stdout, stderr = sorted(pg_store.log_tails(job_id), key=lambda r: r.stream, reverse=True)
    assert (stdout.size, stderr.size, stderr.tail) == (5000, 15, "the last words\n")
    assert pg_cli("dbdict", "logs", str(job_id), "--stderr").stdout == "the last words\n"
    # The whole output stays in the workdir.
    assert (tmp_path / "dbdict-jobs").exists()
    workdir = next((tmp_path / "dbdict-jobs").glob(f"*/default/{job_id}"))
    assert (workdir / "stdout").read_text() == printed


def test_show_prints_the_traceback_of_a_failed_job(pg_store, pg_url, pg_cli, tmp_path,
                                                   workers):
    env = _code(tmp_path)
    (job_id,) = pg_store.enqueue("logexp.fail", [{}]).created
    w = workers(pg_url, "w", *FAST, "--until-empty", env=env)
    assert w.wait(30) == 0, w.log()
    assert _status(pg_store, job_id) == Status.ERR_RUN
    shown = pg_cli("dbdict", "show", str(job_id)).stdout
    excerpt = shown.split(f"stderr of attempt 1, last ", 1)[1]
    assert "Traceback" in excerpt and "ValueError: boom from logexp" in excerpt
    assert len(excerpt.splitlines()) <= 16
    assert pg_cli("dbdict", "logs", str(job_id)).stdout == "about to fail\n"


def test_each_attempt_keeps_its_own_output(pg_store, pg_url, pg_cli, tmp_path, workers):
    env = _code(tmp_path)
    (job_id,) = pg_store.enqueue("logexp.twice", [{}]).created
    w = workers(pg_url, "w", *FAST, "--until-empty", env=env)
    assert w.wait(30) == 0, w.log()
    job = pg_store.job(job_id)[0]
    assert (job.status, job.attempts) == (Status.DONE, 2)
    assert pg_cli("dbdict", "logs", str(job_id)).stdout == "second run\n"
    assert pg_cli("dbdict", "logs", str(job_id), "--attempt", "1").stdout == "first run\n"
    workdir = next((tmp_path / "dbdict-jobs").glob(f"*/default/{job_id}"))
    assert (workdir / "stdout").read_text() == "first run\nsecond run\n"


def test_logs_follow_goes_on_with_the_next_attempt(pg_store, pg_url, tmp_path, workers):
    env = _code(tmp_path)
    (job_id,) = pg_store.enqueue("logexp.twice", [{"pause": 3}]).created
    follower = subprocess.Popen(
        [str(BIN / "dbdict"), "logs", "-f", str(job_id)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**env, "DBDICT_DB": pg_url, "PATH": "/usr/bin:/bin"})
    w = workers(pg_url, "w", *FAST, "--until-empty", env=env)
    try:
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert w.wait(30) == 0, w.log()
    assert follower.returncode == 0, err
    assert out == "first run\nsecond run\n"
    assert "[... attempt 2 ...]" in err


def test_logs_of_a_job_with_nothing_yet_say_so(pg_store, pg_cli):
    (job_id,) = pg_store.enqueue("logexp.slow", [{"lines": 1, "every": 0}]).created
    out = pg_cli("dbdict", "logs", str(job_id))
    assert (out.stdout, out.stderr.strip()) == ("", f"job {job_id} has no logs yet (status START)")
    missing = pg_cli("dbdict", "logs", "999999", ok=False)
    assert missing.returncode != 0 and "no job 999999" in missing.stderr
    assert "--follow" in pg_cli("dbdict", "logs", "--help").stdout


COUNTERS = """
CREATE TABLE log_writes (statements bigint NOT NULL, rows bigint NOT NULL);
INSERT INTO log_writes VALUES (0, 0);
CREATE FUNCTION count_log_statement() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN UPDATE log_writes SET statements = statements + 1; RETURN NULL; END $$;
CREATE FUNCTION count_log_row() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN UPDATE log_writes SET rows = rows + 1; RETURN NULL; END $$;
CREATE TRIGGER log_statements AFTER INSERT ON job_logs
  FOR EACH STATEMENT EXECUTE FUNCTION count_log_statement();
CREATE TRIGGER log_rows AFTER INSERT OR UPDATE ON job_logs
  FOR EACH ROW EXECUTE FUNCTION count_log_row();
"""


def test_busy_jobs_cost_under_one_log_write_per_second_each(pg_store, pg_url, tmp_path,
                                                            workers):
    # Every statement writing job_logs and every row it inserts or updates is counted by
    # triggers of this test's database.
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql(COUNTERS)
    env = _code(tmp_path)
    n, seconds = 12, 12.0
    ids = pg_store.enqueue("logexp.busy", [{"seconds": seconds, "i": i}
                                           for i in range(n)]).created
    started = time.monotonic()
    w = workers(pg_url, "w", *FAST, "--slots", str(n), "--until-empty", "--log-tail", "4096",
                env=env)
    wait_for(lambda: pg_store.counts().get(("default", Status.RUNNING)) == n, 30,
             "every job running")
    live = wait_for(lambda: _counts(pg_store)[1], 15, "live tails written while they run")
    assert w.wait(60) == 0, w.log()
    elapsed = time.monotonic() - started
    assert {_status(pg_store, i) for i in ids} == {Status.DONE}
    statements, rows = _counts(pg_store)
    job_seconds = n * elapsed
    assert live > 0 and rows >= 2 * n  # live tails, then each job's two final ones
    assert statements / job_seconds < 0.2, (statements, rows, elapsed)
    assert rows / job_seconds < 1.0, (statements, rows, elapsed)
    tails = pg_store.log_tails(ids[0])
    assert {r.stream for r in tails} == {"stdout", "stderr"}
    assert all(r.size > 4096 and len(r.tail.encode()) <= 4096 for r in tails)


def _counts(store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return tuple(conn.execute(sa.text("SELECT statements, rows FROM log_writes")).one())
