"""``dbdict run`` and ``dbdict help`` as a user runs them: real processes, real signals."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dbdict_worker.state import read_conf
from tests.acceptance.conftest import BIN

EX = "dbdict_worker.examples."
INCOMPLETE = 75


def user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)  # so a test can see that --dry-run leaves nothing behind
    return env


def dbdict(tmp_path: Path, *args: str, cwd: Path | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dbdict"), *args], capture_output=True, text=True,
                          cwd=cwd or tmp_path, env=user_env(tmp_path), timeout=timeout)


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "dbdict"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=user_env(tmp_path))


def only_dir(tmp_path: Path, prefix: str) -> Path:
    (found,) = [p for p in tmp_path.iterdir() if p.name.startswith(prefix)]
    return found


def wait_for_step(workdir_parent: Path, prefix: str, step: int, proc: subprocess.Popen,
                  timeout: float = 30) -> int:
    """Poll current.conf until the job has saved ``step`` (fails if it ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for p in workdir_parent.glob(prefix + "*/current.conf"):
            try:
                reached = read_conf(p).get("step", 0)
            except (OSError, ValueError):
                continue
            if reached >= step:
                return reached
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"step {step} not reached in {timeout} s")


def test_loop_completes_with_orig_and_current(tmp_path):
    r = dbdict(tmp_path, "run", EX + "loop", "total=50")
    assert r.returncode == 0, r.stderr
    assert "COMPLETE" in r.stderr and "done: result 1275" in r.stdout
    wd = only_dir(tmp_path, "loop,total=50-")
    current = read_conf(wd / "current.conf")
    assert current["step"] == 50 and current["result"] == 1275
    assert current["dbdict.status"] == "DONE"
    assert read_conf(wd / "orig.conf") == {"total": 50, "dbdict.experiment": EX + "loop"}
    again = dbdict(tmp_path, "run", EX + "loop", "total=50")
    assert again.returncode == 1 and "already done" in again.stderr and "--force" in again.stderr
    assert again.stderr.count("\n") == 1, "one line"
    forced = dbdict(tmp_path, "run", EX + "loop", "total=50", "--force")
    assert forced.returncode == 0, forced.stderr


def test_dry_run_leaves_nothing_behind(tmp_path):
    r = dbdict(tmp_path, "run", EX + "add", "first=1", "second=2", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "result = 3" in r.stdout, "the final state is printed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmpdir"]
    assert list((tmp_path / "tmpdir").iterdir()) == [], "no workdir, no scratch directory"


def test_sigterm_stops_then_same_command_resumes_to_the_same_end(tmp_path):
    args = ["run", EX + "loop", "total=400", "sleep=0.005", "--save-interval", "0.02"]
    proc = start(tmp_path, *args)
    wait_for_step(tmp_path, "loop,", 30, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == INCOMPLETE, err
    assert "INCOMPLETE" in err and "resume" in err
    wd = only_dir(tmp_path, "loop,")
    stopped = read_conf(wd / "current.conf")
    assert stopped["dbdict.status"] == "START" and 30 <= stopped["step"] < 400
    assert f"stopping at step {stopped['step']}" in out, "the experiment saw 'stop'"
    resumed = dbdict(tmp_path, *args)
    assert resumed.returncode == 0, resumed.stderr
    final = read_conf(wd / "current.conf")
    reference = dbdict(tmp_path, "run", EX + "loop", "total=400", "--dry-run")
    expected = {"step": 400, "acc": 80200, "result": 80200}
    assert {k: final[k] for k in expected} == expected
    assert "acc = 80200" in reference.stdout and "result = 80200" in reference.stdout
    starts = (wd / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and starts[1].startswith(f"start at step {stopped['step']} ")


def test_sigint_is_forwarded_too(tmp_path):
    proc = start(tmp_path, "run", EX + "loop", "total=100000", "sleep=0.002",
                 "--save-interval", "0.02")
    wait_for_step(tmp_path, "loop,", 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == INCOMPLETE, err


def test_stubborn_child_is_killed_after_grace_with_last_state(tmp_path):
    proc = start(tmp_path, "run", EX + "stubborn", "--grace", "0.5", "--save-interval", "0.05")
    seen = wait_for_step(tmp_path, "stubborn", 5, proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent >= 0.45, "the grace period was given"
    assert proc.returncode == INCOMPLETE, err
    assert "killed by signal 9 (SIGKILL)" in err
    current = read_conf(only_dir(tmp_path, "stubborn") / "current.conf")
    assert current["step"] >= seen and current["stops"] >= 1
    assert current["dbdict.status"] == "START"


def test_second_signal_kills_at_once(tmp_path):
    proc = start(tmp_path, "run", EX + "stubborn", "--grace", "60", "--save-interval", "0.05")
    wait_for_step(tmp_path, "stubborn", 3, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # let the first one be handled; the point is not to wait 60 s
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == INCOMPLETE and "SIGKILL" in err


def test_raising_experiment(tmp_path):
    r = dbdict(tmp_path, "run", EX + "fail", "steps=2")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith("error: ERR_RUN: ")
    assert "ExperimentFailed: deliberate failure at step 2" in r.stderr.splitlines()[-1]
    wd = only_dir(tmp_path, "fail,")
    assert "Traceback (most recent call last)" in (wd / "stderr").read_text()
    current = read_conf(wd / "current.conf")
    assert current["dbdict.status"] == "ERR_RUN" and current["step"] == 2
    assert current["dbdict.error"].endswith("ExperimentFailed: deliberate failure at step 2")


def test_unimportable_experiment(tmp_path):
    r = dbdict(tmp_path, "run", "no_such_pkg.mod.run", "a=1")
    assert r.returncode == 1
    assert "ERR_START" in r.stderr and "No module named 'no_such_pkg'" in r.stderr


def test_experiment_from_the_current_directory(tmp_path):
    (tmp_path / "myexp.py").write_text(
        "def run(state, channel):\n    state.doubled = state.x * 2\n")
    r = dbdict(tmp_path, "run", "myexp.run", "x=21", "--workdir", "out")
    assert r.returncode == 0, r.stderr
    assert read_conf(tmp_path / "out" / "current.conf")["doubled"] == 42


def test_builder_example_regexp(tmp_path):
    r = dbdict(tmp_path, "run", EX + "regexp", "regexp::re.compile", "regexp.pattern='a.*c'",
               "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "result = 'hello blahblah there'" in r.stdout
    assert "built = 're.Pattern'" in r.stdout


def test_files_merge_and_orig_conf_reruns(tmp_path):
    (tmp_path / "a.conf").write_text("first = 1\nsecond = 100  # overridden below\n")
    (tmp_path / "b.conf").write_text("second = 2\n# a comment\nextra.deep = 'x'\n")
    r = dbdict(tmp_path, "run", EX + "add", "--file", "a.conf", "--file", "b.conf",
               "first=10", "--workdir", "w1")
    assert r.returncode == 0, r.stderr
    assert read_conf(tmp_path / "w1" / "current.conf")["result"] == 12
    rerun = dbdict(tmp_path, "run", "--file", "w1/orig.conf", "--workdir", "w2")
    assert rerun.returncode == 0, rerun.stderr
    assert read_conf(tmp_path / "w2" / "current.conf")["result"] == 12
    assert read_conf(tmp_path / "w2" / "orig.conf") == read_conf(tmp_path / "w1" / "orig.conf")


def test_usage_errors(tmp_path):
    for args, match in [
        (["run"], "missing EXPERIMENT"),
        (["run", EX + "add", "a={{1,2}}"], "sweeps are for dbdict-enqueue"),
        (["run", EX + "add", "--workdir", "x", "--dry-run"], "only one of"),
        (["run", "notdotted", "a=1"], "dotted path"),
        (["run", EX + "add", "dbdict.id=3"], "reserved"),
    ]:
        r = dbdict(tmp_path, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert match in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    dbdict(tmp_path, "run", EX + "add", "first=1", "second=2", "--workdir", "w")
    other = dbdict(tmp_path, "run", EX + "add", "first=5", "second=2", "--workdir", "w")
    assert other.returncode == 2 and "other parameters" in other.stderr


def test_redirect_sends_output_to_the_workdir(tmp_path):
    r = dbdict(tmp_path, "run", EX + "shell_out", "--redirect", "--workdir", "w")
    assert r.returncode == 0, r.stderr
    assert "stdout line" not in r.stdout
    assert (tmp_path / "w" / "stdout").read_text() == \
        "python stdout line\nsubprocess stdout line\n"


def test_workdir_names_are_safe(tmp_path):
    r = dbdict(tmp_path, "run", EX + "add", "first='a/b $(x)'", "second=' c'")
    assert r.returncode == 0, r.stderr
    (wd,) = [p for p in tmp_path.iterdir() if p.name.startswith("add,")]
    assert (wd / "current.conf").exists() and "/" not in wd.name and " " not in wd.name


def test_help_topics_and_their_examples_run(tmp_path):
    topics = dbdict(tmp_path, "help")
    assert topics.returncode == 0
    for topic in ("experiment", "parameters", "example"):
        assert topic in topics.stdout
        assert dbdict(tmp_path, "help", topic).returncode == 0
    assert dbdict(tmp_path, "help", "nonsense").returncode == 2
    example = dbdict(tmp_path, "help", "example").stdout
    commands = [line.strip()[2:] for line in example.splitlines()
                if line.strip().startswith("$ dbdict run") and "--dry-run" in line]
    assert len(commands) >= 4
    for command in commands:
        argv = shlex.split(command)
        r = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                           cwd=tmp_path, env=user_env(tmp_path), timeout=60)
        assert r.returncode == 0, (command, r.stderr)
        assert "result = " in r.stdout, command
