"""``dbdict wait``: blocks until the selected jobs have ended (a real worker in another
process runs them); exit 0 when all ended DONE, 1 after a failure, 124 at --timeout; plain
progress lines when not on a terminal, a line rewritten in place on one."""
from __future__ import annotations

import os
import pty
import subprocess
import time

from tests.acceptance.conftest import BIN

ADD = "dbdict_worker.examples.add"
FAIL = "dbdict_worker.examples.fail"


def start_wait(cli, *args: str, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
    env.update({"DBDICT_DB": cli.url, "DBDICT_RETRY_SECONDS": "3"})
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([str(BIN / "dbdict"), "wait", *args], text=True, cwd=cli.cwd,
                            env=env, **kw)


def test_wait_exits_0_once_every_job_is_done(cli, db_url, workers):
    cli("dbdict-enqueue", ADD, "first=1", "second={{1,2,3}}", "--table", "sweep")
    cli("dbdict-enqueue", ADD, "first=5", "second=5", "--table", "other")  # never run
    waiter = start_wait(cli, "--table", "sweep", "--every", "1s")
    time.sleep(0.5)  # give the wait its first look while all three are queued
    assert waiter.poll() is None
    workers(db_url, "w", "--table", "sweep", "--until-empty").wait()
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, (out, err)
    assert out.strip() == "all 3 jobs DONE"
    # Not a terminal: whole lines, no carriage returns; the first at once, 3 queued.
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("wait: 0/3 ended, 0 running, 3 queued, ETA ?")
    assert lines[-1].startswith("wait: 3/3 ended (3 DONE), 0 running, 0 queued")


def test_wait_exits_1_when_a_job_failed(cli, db_url, workers):
    cli("dbdict-enqueue", ADD, "first=1", "second=2")
    cli("dbdict-enqueue", FAIL, "x=1")
    workers(db_url, "w", "--until-empty").wait()
    proc = cli("dbdict", "wait", "--quiet", ok=False)
    assert proc.returncode == 1, proc
    assert proc.stdout.strip() == "1 of 2 jobs did not end DONE: 1 DONE, 1 ERR_RUN"
    assert proc.stderr == ""  # --quiet: the last line only
    # A selection of the DONE one alone: 0.
    assert cli("dbdict", "wait", "-q", "--where", "first=1").stdout.strip() == "all 1 jobs DONE"


def test_wait_gives_up_at_its_timeout(cli):
    cli("dbdict-enqueue", ADD, "first=1", "second=2")  # no worker: it never ends
    started = time.monotonic()
    proc = cli("dbdict", "wait", "--timeout", "2s", "--every", "1m", ok=False)
    took = time.monotonic() - started
    assert proc.returncode == 124, proc
    assert proc.stdout.strip() == "gave up after 2s: 1 of 1 jobs not ended (1 START)"
    assert 2.0 <= took < 15, took
    assert len(proc.stderr.splitlines()) == 1  # --every 1m: only the first line
    bad = cli("dbdict", "wait", "--timeout", "soon", ok=False)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    # Nothing selected: nothing to wait for, exit 0 with a note.
    none = cli("dbdict", "wait", "--where", "first=99")
    assert none.stdout.strip() == "no job selected: nothing to wait for"


def test_wait_on_a_terminal_rewrites_one_line(pg_cli, pg_url, workers):
    pg_cli("dbdict-enqueue", ADD, "first=1", "second={{1,2}}")
    master, slave = pty.openpty()
    try:
        waiter = start_wait(pg_cli, stderr=slave)
        os.close(slave)
        slave = -1
        workers(pg_url, "w", "--until-empty").wait()
        out, _ = waiter.communicate(timeout=30)
        assert waiter.returncode == 0 and out.strip() == "all 2 jobs DONE"
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed (EIO on Linux)
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    text = seen.decode()
    assert text.startswith("\rwait: 0/2 ended") and "\rwait: 2/2 ended (2 DONE)" in text
    assert text.endswith("\r\n")  # the line ends once, when the wait does
