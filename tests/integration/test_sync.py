"""rsync with a local exproot and with ssh://localhost against a real sshd (no mocks)."""
from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.job.jobrun import JobRun
from dbdict_worker.job.process import JobSpec
from dbdict_worker.state import read_conf
from dbdict_worker.job.sync import ExpRoot, SavePusher, SyncConfig, Syncer, SyncError
from tests.support.sshd import Sshd, free_port, sshd  # noqa: F401 (the fixture)
from tests.support.waiting import wait_for

EX = "dbdict_worker.examples."
FAST = dict(attempts=2, wait_initial=0.01, wait_max=0.05, max_seconds=30)


@pytest.fixture(params=["local", "ssh"])
def root(request, tmp_path) -> tuple[ExpRoot, SyncConfig, Path]:
    """(exproot, config, where the exproot's files really are) for both kinds."""
    base = tmp_path / "exproot"
    if request.param == "local":
        return ExpRoot.parse(str(base)), SyncConfig(**FAST), base
    server: Sshd = request.getfixturevalue("sshd")
    return (ExpRoot.parse(f"ssh://localhost:{base}"), SyncConfig(rsh=server.rsh, **FAST), base)


def test_pull_sees_earlier_files_push_carries_new_ones_no_sync_stays(root, tmp_path):
    exproot, config, base = root
    remote = exproot.job("mydb", "sweep1", 42)
    real = base / "mydb" / "sweep1" / "42"
    first = Syncer(remote, tmp_path / "w1", config)
    first.pull()
    assert real.is_dir(), "the job's directory is created in the exproot"
    (first.local / "model.ckpt").write_text("epoch 1")
    (first.local / "sub").mkdir()
    (first.local / "sub" / "log.txt").write_text("log")
    (first.local / "cache.no_sync").write_text("scratch")
    first.push()
    assert (real / "model.ckpt").read_text() == "epoch 1"
    assert (real / "sub" / "log.txt").read_text() == "log", "into <id>/, not <id>/w1/"
    assert not (real / "cache.no_sync").exists()
    second = Syncer(remote, tmp_path / "w2", config)  # another machine, later
    second.pull()
    assert (second.local / "model.ckpt").read_text() == "epoch 1"
    assert not (second.local / "cache.no_sync").exists()


def test_job_is_resumed_from_the_exproot_on_another_machine(root, tmp_path):
    exproot, config, base = root
    remote = exproot.job("db", "t", 1)
    params = {"total": 300, "sleep": 0.003}
    saves: list[dict] = []
    run1 = JobRun(JobSpec(EX + "loop", params, workdir=tmp_path / "m1", save_interval=0.02),
                  syncer=Syncer(remote, tmp_path / "m1", config), on_save=saves.append,
                  grace=10, push_interval=0.05)
    result: list = []
    t = threading.Thread(target=lambda: result.append(run1.run()))
    t.start()
    deadline = time.monotonic() + 20
    while not (saves and saves[-1]["step"] >= 20):
        assert time.monotonic() < deadline, "no saves arrived"
        time.sleep(0.02)
    run1.request_stop()
    t.join(30)
    (r1,) = result
    assert r1.outcome.status == Status.START and r1.pushed is True
    reached = r1.outcome.state["step"]
    real = base / "db" / "t" / "1"
    assert read_conf(real / "current.conf")["step"] == reached
    run2 = JobRun(JobSpec(EX + "loop", params, workdir=tmp_path / "m2"),
                  syncer=Syncer(remote, tmp_path / "m2", config))
    r2 = run2.run()
    assert r2.outcome.status == Status.DONE and r2.pushed is True
    assert r2.outcome.state["result"] == sum(range(301))
    starts = (real / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and starts[1].startswith(f"start at step {reached} ")
    assert read_conf(real / "current.conf")["dbdict.status"] == "DONE"


def test_shell_metacharacters_create_exactly_that_directory(root, tmp_path):
    exproot, config, base = root
    marker = f"/tmp/dbdict-pwned-{uuid.uuid4().hex}"
    nasty = f"we ird 'q' \"dq\" $(touch {marker}) `touch {marker}`; touch {marker} & \\n"
    if exproot.is_remote:
        exproot = ExpRoot.parse(f"ssh://localhost:{base}/{nasty}")
    else:
        exproot = ExpRoot.parse(f"{base}/{nasty}")
    syncer = Syncer(exproot.job("db", "t; rm -rf ~", 3), tmp_path / "w", config)
    syncer.pull()
    (syncer.local / "f.txt").write_text("x")
    syncer.push()
    exact = Path(f"{base}/{nasty}") / "db" / "t; rm -rf ~" / "3"
    assert (exact / "f.txt").read_text() == "x"
    assert not os.path.exists(marker), "nothing in the path was run"


def test_relative_ssh_path_is_under_the_remote_home(sshd, tmp_path):  # noqa: F811
    rel = f".cache/dbdict-test-{uuid.uuid4().hex}"
    home = Path(os.path.expanduser("~"))
    try:
        syncer = Syncer(ExpRoot.parse(f"ssh://{sshd.user}@localhost:{rel}").job("d", "t", 9),
                        tmp_path / "w", SyncConfig(rsh=sshd.rsh, **FAST))
        syncer.pull()
        (syncer.local / "a").write_text("a")
        syncer.push()
        assert (home / rel / "d" / "t" / "9" / "a").read_text() == "a"
    finally:
        shutil.rmtree(home / rel, ignore_errors=True)


def test_unreachable_host_on_pull_is_err_start_local_copy_kept(sshd, tmp_path):  # noqa: F811
    closed = SyncConfig(rsh=sshd.rsh_for(free_port()), **FAST)
    local = tmp_path / "w"
    run = JobRun(JobSpec(EX + "add", {"first": 1, "second": 2}, workdir=local),
                 syncer=Syncer(ExpRoot.parse(f"ssh://localhost:{tmp_path}/root").job("d", "t", 1),
                               local, closed))
    result = run.run()
    assert result.outcome.status == Status.ERR_START and result.pushed is False
    assert "failed after 2 attempts" in result.outcome.error
    assert "Connection refused" in result.outcome.error
    assert str(local) in result.outcome.error
    assert not (local / "current.conf").exists(), "the experiment never ran"


def test_push_failure_is_err_sync_local_copy_kept(sshd, tmp_path):  # noqa: F811
    local = tmp_path / "w"
    syncer = Syncer(ExpRoot.parse(f"ssh://localhost:{tmp_path}/root").job("d", "t", 1), local,
                    SyncConfig(rsh=sshd.rsh, **FAST))
    broken = dataclasses.replace(syncer.config, rsh=sshd.rsh_for(free_port()))

    def network_goes_away(proc) -> None:  # after the pull, before the push
        syncer.config = broken

    run = JobRun(JobSpec(EX + "add", {"first": 1, "second": 2}, workdir=local),
                 syncer=syncer, on_start=network_goes_away)
    result = run.run()
    assert result.outcome.status == Status.ERR_SYNC and result.pushed is False
    assert result.outcome.state["result"] == 3, "the result itself is kept"
    assert "push to ssh://localhost:" in result.outcome.error
    assert f"local copy kept at {local}" in result.outcome.error
    assert read_conf(local / "current.conf")["result"] == 3
    assert not (tmp_path / "root" / "d" / "t" / "1" / "current.conf").exists()


def test_permanent_failures_are_not_retried(tmp_path, monkeypatch):
    syncer = Syncer(ExpRoot.parse(str(tmp_path / "r")), tmp_path / "w",
                    SyncConfig(attempts=5, wait_initial=1, wait_max=1))
    syncer.local.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no rsync to be found
    started = time.monotonic()
    with pytest.raises(SyncError, match="after 1 attempt: rsync is not installed"):
        syncer.push()
    assert time.monotonic() - started < 1, "no backoff for what cannot get better"


def test_save_pusher_pushes_then_answers_and_stops_when_not_allowed(tmp_path):
    syncer = Syncer(ExpRoot.parse(str(tmp_path / "r")), tmp_path / "w", SyncConfig(**FAST))
    syncer.pull()
    allowed = [True]
    answers: list[bool] = []
    pusher = SavePusher(syncer, allowed=lambda: allowed[0])
    try:
        (syncer.local / "step").write_text("1")
        pusher.request(answers.append)
        wait_for(lambda: answers, 10, "the first answer")
        assert answers == [True] and (tmp_path / "r" / "step").read_text() == "1", \
            "answered once the files are in the exproot"
        allowed[0] = False  # the job was taken away: nothing more is written there
        (syncer.local / "step").write_text("2")
        pusher.request(answers.append)
        wait_for(lambda: len(answers) == 2, 10, "the second answer")
    finally:
        pusher.close()
    assert answers == [True, False] and (tmp_path / "r" / "step").read_text() == "1"
    assert pusher.pushes == 1 and pusher.failures == 0


def test_a_same_size_rewrite_within_the_second_is_pushed(tmp_path):
    # rsync's quick check compares whole seconds unless told otherwise: a checkpoint
    # rewritten with the same size right after a push would stay stale in the exproot.
    syncer = Syncer(ExpRoot.parse(str(tmp_path / "r")), tmp_path / "w", SyncConfig(**FAST))
    syncer.pull()
    for i in range(10):
        tmp = syncer.local / "w.tmp"
        tmp.write_text(f"{i:05d}")
        os.replace(tmp, syncer.local / "weights")
        syncer.push()
        assert (tmp_path / "r" / "weights").read_text() == f"{i:05d}"


def test_a_local_exproot_that_is_away_for_a_moment_is_waited_for(tmp_path):
    # The exproot is a link that points at a plain file for a second (a shared filesystem
    # that is away), then back at the real directory: the pull waits, it does not fail.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "off").write_text("not a directory")
    link = tmp_path / "exproot"
    link.symlink_to(tmp_path / "off")

    def come_back() -> None:
        time.sleep(1.0)  # the outage being simulated
        tmp = tmp_path / "tmp-link"
        tmp.symlink_to(real)
        os.replace(tmp, link)

    back = threading.Thread(target=come_back)
    back.start()
    config = SyncConfig.from_env(attempts=20, max_seconds=30, wait_initial=0.05, wait_max=0.5)
    syncer = Syncer(ExpRoot.parse(str(link)).job("db", "t", 1), tmp_path / "local", config)
    started = time.monotonic()
    syncer.pull()
    back.join()
    assert time.monotonic() - started >= 0.9
    assert (real / "db" / "t" / "1").is_dir()
