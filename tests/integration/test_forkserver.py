"""Job processes forked by the warm fork server behave like new interpreters."""
from __future__ import annotations

import json
import os
import signal

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.job.forkserver import ForkServer
from dbdict_worker.job.process import JobProcess, JobSpec
from dbdict_worker.state import read_conf
from tests.support.waiting import wait_for

EX = "dbdict_worker.examples."


@pytest.fixture
def server():
    fs = ForkServer()
    yield fs
    fs.close()


def test_many_quick_jobs_all_report_their_outcome(server, tmp_path):
    # Jobs that end at once race their own registration: none may be lost.
    procs = [JobProcess.start(JobSpec(EX + "add", {"first": i, "second": 1},
                                      workdir=tmp_path / f"j{i}"), forkserver=server)
             for i in range(40)]
    for i, proc in enumerate(procs):
        outcome = proc.wait(30)
        assert outcome is not None and outcome.status == Status.DONE
        assert outcome.state["result"] == i + 1
    assert read_conf(tmp_path / "j3" / "current.conf")["result"] == 4
    assert (tmp_path / "j3" / "stdout").read_text() == "3 + 1 = 4\n"


def test_jobs_spawned_from_several_threads_each_get_their_own_process(server, tmp_path):
    # Replies name no request: a spawn must never take another thread's child for its own.
    import threading

    procs: list[JobProcess] = []

    def spawn(k: int) -> None:
        for i in range(15):
            procs.append(JobProcess.start(JobSpec(EX + "loop", {"total": 3},
                                                  workdir=tmp_path / f"t{k}-{i}"),
                                          forkserver=server))

    threads = [threading.Thread(target=spawn, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(procs) == 45
    for proc in procs:
        assert proc.wait(30) is not None
        started = (proc.workdir.path / "starts.log").read_text().split()
        assert int(started[-1]) == proc.pid


def test_own_session_signals_cwd_and_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DBDICT_DB", "postgresql://u:Secret-Pw-123@h/db")
    monkeypatch.setenv("PGPASSWORD", "Secret-Pw-123")
    spec = JobSpec(EX + "loop", {"total": 100000, "sleep": 0.01}, workdir=tmp_path / "w",
                   save_interval=0)
    proc = JobProcess.start(spec, forkserver=server)
    wait_for(lambda: proc.latest_state.get("step", 0) > 3, 30, "progress")
    assert os.getpgid(proc.pid) == proc.pid  # its own group, which stop() signals
    assert os.readlink(f"/proc/{proc.pid}/cwd") == str(tmp_path / "w")
    # Not even the memory it was forked with holds the worker's secrets.
    assert b"Secret-Pw-123" not in open(f"/proc/{proc.pid}/environ", "rb").read()
    outcome = proc.stop(grace=10)
    assert outcome.status == Status.START and outcome.state["step"] > 3


def test_the_job_environment_reaches_programs_it_starts(server, tmp_path):
    script = 'printf %s "$CUDA_VISIBLE_DEVICES,$DBDICT_EXPERIMENT_TEMPDIR" > seen.txt'
    spec = JobSpec('cmd:["/bin/sh", "-c", ' + json.dumps(script) + "]", {},
                   workdir=tmp_path / "c", env={"CUDA_VISIBLE_DEVICES": "3"})
    outcome = JobProcess.start(spec, forkserver=server).wait(30)
    assert outcome.status == Status.DONE, outcome
    gpu, scratch = (tmp_path / "c" / "seen.txt").read_text().split(",")
    assert gpu == "3" and scratch.endswith("/tmp")


def test_a_killed_job_is_reported_with_its_signal(server, tmp_path):
    proc = JobProcess.start(JobSpec(EX + "loop", {"total": 100000, "sleep": 0.01},
                                    workdir=tmp_path / "k"), forkserver=server)
    wait_for(lambda: proc.started, 30, "the experiment to start")
    os.kill(proc.pid, signal.SIGKILL)  # not through us: a crash, as the OOM killer does
    outcome = proc.wait(30)
    assert outcome.status == Status.ERR_RUN and "signal 9" in outcome.error


def test_a_dead_server_means_a_new_interpreter(server, tmp_path):
    first = JobProcess.start(JobSpec(EX + "noop", {}, workdir=tmp_path / "a"),
                             forkserver=server)
    assert first.wait(30).status == Status.DONE
    server._proc.kill()
    server._proc.wait()
    # The next spawn starts a new server (or falls back): the job runs either way.
    second = JobProcess.start(JobSpec(EX + "add", {"first": 1, "second": 2},
                                      workdir=tmp_path / "b"), forkserver=server)
    outcome = second.wait(30)
    assert outcome.status == Status.DONE and outcome.state["result"] == 3
