"""The parent-side JobProcess and the child runner, with real processes and real signals."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from dbdict_worker.job.cmdexp import CommandTemplate
from dbdict_worker.constants import Status
from dbdict_worker.job.process import JobProcess, JobSpec, Outcome, StartError
from dbdict_worker.state import read_conf
from tests.support.waiting import wait_for

EX = "dbdict_worker.examples."


def conf_step(path: Path) -> int:
    try:
        return read_conf(path / "current.conf").get("step", 0)
    except (OSError, ValueError):
        return 0


def run(spec: JobSpec, timeout: float = 30) -> Outcome:
    proc = JobProcess.start(spec)
    outcome = proc.wait(timeout)
    if outcome is None:
        proc.kill()
        pytest.fail("the job did not finish in time")
    return outcome


def test_complete_writes_orig_current_and_stdout(tmp_path):
    wd = tmp_path / "job"
    outcome = run(JobSpec(EX + "add", {"first": 2, "second": 40}, workdir=wd,
                          reserved={"dbdict.id": 7, "dbdict.table": "t"}))
    assert outcome.status == Status.DONE and outcome.complete and outcome.started
    assert outcome.state == {"first": 2, "second": 40, "result": 42}
    assert outcome.returncode == 0 and outcome.error is None
    assert read_conf(wd / "orig.conf") == {"first": 2, "second": 40,
                                           "dbdict.experiment": EX + "add"}
    current = read_conf(wd / "current.conf")
    assert current["result"] == 42 and current["dbdict.status"] == "DONE"
    assert current["dbdict.id"] == 7
    assert (wd / "stdout").read_text() == "2 + 40 = 42\n"


def test_saves_stream_while_running_then_stop(tmp_path):
    wd = tmp_path / "job"
    params = {"total": 100_000, "sleep": 0.002}
    proc = JobProcess.start(JobSpec(EX + "loop", params, workdir=wd, save_interval=0.05))
    wait_for(lambda: proc.started, what="the experiment to start")
    saves = []
    wait_for(lambda: saves.extend(proc.take_saves()) or len(saves) >= 3, what="three saves")
    steps = [s["step"] for s in saves]
    assert steps == sorted(steps) and steps[0] >= 1
    outcome = proc.stop(grace=10)
    assert outcome.status == Status.START and outcome.incomplete and outcome.stopped
    reached = outcome.state["step"]
    assert reached >= steps[-1]
    assert read_conf(wd / "current.conf")["step"] == reached, \
        "the pending save was flushed when 'stop' was reported"
    assert read_conf(wd / "orig.conf")["total"] == 100_000
    assert proc.latest_state == outcome.state, "the end message carries the final state"


def test_resume_gives_the_same_final_state_as_an_uninterrupted_run(tmp_path):
    params = {"total": 400, "sleep": 0.003}
    reference = run(JobSpec(EX + "loop", {"total": 400}, workdir=tmp_path / "ref"))
    wd = tmp_path / "job"
    proc = JobProcess.start(JobSpec(EX + "loop", params, workdir=wd, save_interval=0.02))
    wait_for(lambda: conf_step(wd) >= 20, what="step 20 in current.conf")
    first = proc.stop(grace=10)
    assert first.status == Status.START and 20 <= first.state["step"] < 400
    second = run(JobSpec(EX + "loop", params, workdir=wd))
    assert second.status == Status.DONE
    assert {k: second.state[k] for k in ("step", "acc", "result")} == \
        {k: reference.state[k] for k in ("step", "acc", "result")}
    starts = (wd / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and starts[1].startswith(f"start at step {first.state['step']} ")


def test_raising_experiment_is_err_run_with_traceback(tmp_path):
    wd = tmp_path / "job"
    outcome = run(JobSpec(EX + "fail", {}, workdir=wd))
    assert outcome.status == Status.ERR_RUN
    assert outcome.error.endswith("ExperimentFailed: deliberate failure at step 3")
    assert outcome.state == {"step": 3}
    stderr = (wd / "stderr").read_text()
    assert "Traceback (most recent call last)" in stderr and 'fail.py", line' in stderr
    current = read_conf(wd / "current.conf")
    assert current["dbdict.status"] == "ERR_RUN" and current["dbdict.error"] == outcome.error


def test_unimportable_experiment_is_err_start(tmp_path):
    outcome = run(JobSpec("no_such_package.train.run", {"lr": 1}, workdir=tmp_path / "j"))
    assert outcome.status == Status.ERR_START and not outcome.started
    assert "No module named 'no_such_package'" in outcome.error
    outcome = run(JobSpec(EX + "nothing_here", {}, workdir=tmp_path / "k"))
    assert outcome.status == Status.ERR_START and "nothing_here" in outcome.error


@pytest.mark.parametrize("how, reason", [("kill", "killed by signal 9 (SIGKILL)"),
                                         ("exit", "exited with code 3")])
def test_child_dying_without_reporting(tmp_path, how, reason):
    wd = tmp_path / "job"
    outcome = run(JobSpec(EX + "crash", {"how": how}, workdir=wd))
    assert outcome.status == Status.ERR_RUN and outcome.error == reason
    assert outcome.returncode == (-9 if how == "kill" else 3)
    assert outcome.state["step"] == 1, "its last flushed save is kept"
    current = read_conf(wd / "current.conf")
    assert current["dbdict.status"] == "ERR_RUN" and current["dbdict.error"] == reason


def test_stubborn_child_is_killed_after_grace_with_its_saves_intact(tmp_path):
    wd = tmp_path / "job"
    proc = JobProcess.start(JobSpec(EX + "stubborn", {"sleep": 0.01}, workdir=wd,
                                    save_interval=0.05))
    seen = wait_for(lambda: conf_step(wd) >= 5, what="a few saved steps")
    started = time.monotonic()
    outcome = proc.stop(grace=0.6)
    assert time.monotonic() - started >= 0.55, "it had its grace period"
    assert outcome.status == Status.START and outcome.stopped and outcome.returncode == -9
    assert outcome.error == "stopped: killed by signal 9 (SIGKILL)"
    current = read_conf(wd / "current.conf")
    assert current["step"] == outcome.state["step"] >= seen
    assert current["stops"] >= 1, "it was told to stop and saved after that"
    assert current["dbdict.status"] == "START"


def test_environment_redirection_and_tempdir(tmp_path, monkeypatch):
    monkeypatch.setenv("DBDICT_DB", "postgresql://me:secret@db/x")
    monkeypatch.setenv("PGPASSWORD", "secret")
    monkeypatch.setenv("PGPASSFILE", "/home/me/.pgpass")
    wd = tmp_path / "job"
    outcome = run(JobSpec(EX + "shell_out", {}, workdir=wd,
                          env={"CUDA_VISIBLE_DEVICES": "3"}, tempdir_base=str(tmp_path)))
    assert outcome.status == Status.DONE, outcome.error
    st = outcome.state
    assert st["secrets"] == [] and st["gpu"] == "3"
    assert st["cwd"] == str(wd)
    assert st["tempdir_exists"] and st["tempdir"].startswith(str(tmp_path))
    assert not os.path.exists(st["tempdir"]), "the scratch directory is removed after"
    assert (wd / "stdout").read_text() == "python stdout line\nsubprocess stdout line\n"
    assert (wd / "stderr").read_text() == "python stderr line\nsubprocess stderr line\n"
    # Appended, not truncated, by the next run in the same workdir.
    run(JobSpec(EX + "shell_out", {}, workdir=wd, resume=False))
    assert (wd / "stdout").read_text().count("python stdout line") == 2


def test_large_state_does_not_block_the_child(tmp_path):
    wd = tmp_path / "job"
    big = "x" * 3_000_000  # far beyond a pipe buffer
    outcome = run(JobSpec(EX + "add", {"first": big, "second": "y"}, workdir=wd))
    assert outcome.status == Status.DONE and outcome.state["result"] == big + "y"


def test_builder_from_parameters(tmp_path):
    outcome = run(JobSpec(EX + "regexp", {"regexp.__builder__": "re.compile",
                                         "regexp.pattern": "a.*c"}, workdir=tmp_path / "j"))
    assert outcome.status == Status.DONE, outcome.error
    assert outcome.state["result"] == "hello blahblah there"
    assert outcome.state["built"] == "re.Pattern"


def test_stray_processes_are_killed_when_the_job_ends(tmp_path):
    wd = tmp_path / "job"
    cmd = CommandTemplate.from_text("sh -c 'sleep 300 & echo $! > sleeper.pid'").encode()
    outcome = run(JobSpec(cmd, {}, workdir=wd))
    assert outcome.status == Status.DONE, outcome.error
    pid = int((wd / "sleeper.pid").read_text())

    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1].startswith("Z")  # a zombie of init is gone
        except FileNotFoundError:
            return True
    wait_for(gone, timeout=5, what="the stray sleep to be killed")


def test_lingering_child_is_killed_after_reporting(tmp_path):
    started = time.monotonic()
    outcome = run(JobSpec(EX + "linger", {}, workdir=tmp_path / "j", linger=0.5))
    assert outcome.status == Status.DONE and outcome.state["result"] == "returned"
    assert outcome.returncode == -9 and time.monotonic() - started < 15


def test_bad_final_value_keeps_the_last_good_state(tmp_path):
    wd = tmp_path / "job"
    # The builder returns an object: storing it in the state is refused at the end.
    code = "def experiment(state, channel):\n    state.ok = 1\n    channel.flush()\n" \
           "    state.obj = object()\n"
    (tmp_path / "badvalue_mod.py").write_text(code)
    outcome = run(JobSpec("badvalue_mod.experiment", {}, workdir=wd,
                          python_path=[str(tmp_path)]))
    assert outcome.status == Status.ERR_RUN and "'obj'" in outcome.error
    assert outcome.state == {"ok": 1}
    assert read_conf(wd / "current.conf")["ok"] == 1


def test_start_errors_are_raised_not_spawned(tmp_path):
    from dbdict_worker.job.process import StartError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StartError, match="cannot create workdir"):
        JobProcess.start(JobSpec(EX + "add", {}, workdir=blocker / "job"))
    with pytest.raises(StartError, match="cannot start"):
        JobProcess.start(JobSpec(EX + "add", {"first": 1, "second": 1},
                                 workdir=tmp_path / "j", python="/nonexistent/python"))


def test_signal_after_exit_is_refused(tmp_path):
    proc = JobProcess.start(JobSpec(EX + "noop", {}, workdir=tmp_path / "j"))
    assert proc.wait(30).status == Status.DONE
    assert proc.signal(signal.SIGTERM) is False, "a reaped pid is never signalled again"


def test_jobrun_never_leaves_the_child_unwatched(tmp_path):
    from dbdict_worker.job.jobrun import JobRun

    def database_gone(state):
        raise RuntimeError("database gone")

    run = JobRun(JobSpec(EX + "loop", {"total": 10**7, "sleep": 0.001}, workdir=tmp_path / "j",
                         save_interval=0.01), on_save=database_gone)
    with pytest.raises(RuntimeError, match="database gone"):
        run.run()
    assert run.process.outcome.returncode == -9, "the child was killed, not left running"
    stopped = JobRun(JobSpec(EX + "add", {}, workdir=tmp_path / "k"))
    stopped.request_stop()
    result = stopped.run()
    assert result.outcome.status == Status.START and stopped.process is None


def test_files_in_the_workdir_never_shadow_the_runners_modules(tmp_path):
    wd = tmp_path / "job"
    wd.mkdir()
    for name in ("json", "ast", "secrets", "dbdict_worker"):
        (wd / f"{name}.py").write_text("raise SystemExit('shadowed!')\n")
    outcome = run(JobSpec(EX + "add", {"first": 1, "second": 2}, workdir=wd))
    assert outcome.status == Status.DONE, outcome.error


def test_resume_takes_current_conf_of_the_same_job_over_the_given_state(tmp_path):
    # The given state plays the database's copy; current.conf, the state the files beside it
    # were saved with. What a run starts from is what it writes to current.conf first.
    from dbdict_worker.examples.checkpoint import write
    from dbdict_worker.state import write_conf

    wd = tmp_path / "job"
    wd.mkdir()
    spec = dict(experiment=EX + "checkpoint", workdir=wd, reserved={"dbdict.id": 7})

    def files_of_step_3() -> None:
        cwd = os.getcwd()
        os.chdir(wd)
        try:
            write(3, 1 + 2 + 3)
        finally:
            os.chdir(cwd)

    files_of_step_3()
    write_conf(wd / "current.conf", {"total": 5, "step": 3, "dbdict.id": 7})
    # The database ran ahead (step 4, never pushed with its files): current.conf wins.
    outcome = run(JobSpec(state={"total": 5, "step": 4}, **spec))
    assert outcome.status == Status.DONE, outcome.error
    assert outcome.state["result"] == 15
    # A current.conf of another job is not this job's save: refused, nothing overwritten.
    write_conf(wd / "current.conf", {"total": 5, "step": 3, "dbdict.id": 8})
    with pytest.raises(StartError, match="belongs to job 8"):
        JobProcess.start(JobSpec(state={"total": 5}, **spec))
    assert read_conf(wd / "current.conf")["dbdict.id"] == 8
    # One that names no job (not a worker's save): the given state is used.
    write_conf(wd / "current.conf", {"total": 5, "step": 1})
    files_of_step_3()
    outcome = run(JobSpec(state={"total": 5, "step": 3}, **spec))
    assert outcome.status == Status.DONE and outcome.state["result"] == 15


def test_a_save_that_pushes_waits_for_the_answer(tmp_path):
    # The child asks for a push at its first save point and goes on only once answered: until
    # then the files on disk stay those of that save.
    wd = tmp_path / "job"
    proc = JobProcess.start(JobSpec(EX + "checkpoint", {"total": 3}, workdir=wd,
                                    save_interval=0, push_interval=3600))
    try:
        (first,) = wait_for(proc.take_push_requests, 30, "a push request")
        assert first["step"] == 1
        time.sleep(0.5)  # the child must not move on by itself; nothing to wait for instead
        assert proc.take_push_requests() == [] and conf_step(wd) == 1
        assert '"step": 1' in (wd / "weights.json").read_text()
        proc.answer_push(True)
        outcome = proc.wait(30)
        assert outcome is not None and outcome.status == Status.DONE
        assert outcome.state["result"] == 6
    finally:
        proc.kill()
