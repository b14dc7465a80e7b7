"""Command experiments (any program, no shell): ``dbdict run --cmd`` and ``dbdict-enqueue
--cmd``, with real processes and signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from dbdict_worker.state import read_conf
from tests.acceptance.conftest import BIN
from tests.acceptance.test_dbdict_run import dbdict, only_dir, start, user_env

STEP = "python -m dbdict_worker.examples.cmd_step"


@pytest.mark.parametrize("code, rc, status", [(0, 0, "DONE"), (75, 75, "START"),
                                              (1, 1, "ERR_RUN")])
def test_exit_codes_map_to_statuses_and_state_json_comes_back(tmp_path, code, rc, status):
    r = dbdict(tmp_path, "run", "--cmd", STEP + " --exit {code} --tag={name!r}", f"code={code}",
               "x=21", "name=o'k", "--workdir", "w")
    assert r.returncode == rc, r.stderr
    current = read_conf(tmp_path / "w" / "current.conf")
    assert current["dbdict.status"] == status
    assert current["result"] == 42, "written to state.json by the program"
    assert current["calls"] == 1
    assert current["argv"] == ["--exit", str(code), '--tag="o\'k"']
    if status == "ERR_RUN":
        assert current["dbdict.error"] == "command exited with code 1"
        assert r.stderr.startswith("error: ERR_RUN: command exited with code 1")
    saved = json.loads((tmp_path / "w" / "state.json").read_text())
    assert saved["x"] == 21 and saved["dbdict.status"] == "RUNNING"


def test_incomplete_command_resumes_with_its_saved_state(tmp_path):
    args = ["run", "--cmd", STEP + " --exit 75", "x=1", "--workdir", "w"]
    assert dbdict(tmp_path, *args).returncode == 75
    assert dbdict(tmp_path, *args).returncode == 75
    assert read_conf(tmp_path / "w" / "current.conf")["calls"] == 2, "it saw its own state"


def test_workdir_placeholder_and_env(tmp_path):
    r = dbdict(tmp_path, "run", "--cmd",
               "sh -c 'echo \"$0|$1|$DBDICT_P_MODEL__SIZE|$DBDICT_P_NAME|$DBDICT_EXPERIMENT_TEMPDIR"
               "\" > seen.txt' {model.size} {workdir}", "model.size=3", "name=adam",
               "--workdir", "w d")
    assert r.returncode == 0, r.stderr
    size, workdir, env_size, env_name, tempdir = \
        (tmp_path / "w d" / "seen.txt").read_text().rstrip("\n").split("|")
    assert (size, workdir, env_size, env_name) == ("3", str(tmp_path / "w d"), "3", "adam")
    assert tempdir and not os.path.exists(tempdir), "a scratch dir, removed afterwards"


def test_sigterm_is_forwarded_to_the_command(tmp_path):
    proc = start(tmp_path, "run", "--cmd", STEP + " --sleep 60", "x=2", "--workdir", "w")
    deadline = time.monotonic() + 30
    # The program writes state.json before it starts waiting: wait for that to come back.
    while time.monotonic() < deadline:
        try:
            if read_conf(tmp_path / "w" / "current.conf").get("calls") == 1:
                break
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    else:
        pytest.fail("the command never saved")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert time.monotonic() - started < 10, "it stopped on SIGTERM, not after its sleep"
    assert read_conf(tmp_path / "w" / "current.conf")["dbdict.status"] == "START"


def test_command_unaware_of_the_protocol_stops_as_incomplete(tmp_path):
    proc = start(tmp_path, "run", "--cmd", "sh -c 'echo up > up.txt; exec sleep 60'",
                 "--workdir", "w", "--grace", "5")
    deadline = time.monotonic() + 30
    while not (tmp_path / "w" / "up.txt").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert "stopped: command killed by signal 15 (SIGTERM)" in err


def test_bad_values_in_state_json_are_a_clear_error(tmp_path):
    r = dbdict(tmp_path, "run", "--cmd", STEP + " --write-bad", "--workdir", "w")
    assert r.returncode == 1
    assert "state.json" in r.stderr and "'bad'" in r.stderr and r.stderr.count("\n") == 1
    current = read_conf(tmp_path / "w" / "current.conf")
    assert current["dbdict.status"] == "ERR_RUN" and "bad" not in current


def test_missing_program_is_err_start(tmp_path):
    r = dbdict(tmp_path, "run", "--cmd", "no-such-program-here {x}", "x=1", "--workdir", "w")
    assert r.returncode == 1 and "ERR_START" in r.stderr and "no-such-program-here" in r.stderr


@pytest.mark.parametrize("shell", [False, True])
def test_values_are_never_run_by_a_shell(tmp_path, shell):
    marker = f"/tmp/dbdict-pwned-{uuid.uuid4().hex}"
    value = f"$(touch {marker}); `touch {marker}` 'q'"
    template = "echo {name} > out.txt" if shell else "sh -c 'echo \"$0\" > out.txt' {name}"
    args = ["run", "--cmd", template, f"name={value}", "--workdir", "w"]
    r = dbdict(tmp_path, *args, *(["--shell"] if shell else []))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "w" / "out.txt").read_text() == value + "\n"
    assert not os.path.exists(marker)


def test_enqueue_cmd_stores_and_validates_the_template(tmp_path):
    env = user_env(tmp_path)
    env["DBDICT_DB"] = f"sqlite:///{tmp_path / 'q.sqlite'}"

    def enqueue(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "dbdict-enqueue"), *args], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=60)

    r = enqueue("--cmd", "python train.py --lr {lr} --out {workdir}", "lr={{0.1,0.01}}",
                "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["created"]) == 2
    jobs = json.loads(subprocess.run([str(BIN / "dbdict"), "list", "--json"],
                                     capture_output=True, text=True, cwd=tmp_path, env=env,
                                     timeout=60).stdout)
    assert {j["experiment"] for j in jobs} == {
        'cmd:["python","train.py","--lr","{lr}","--out","{workdir}"]'}
    assert sorted(j["state"]["lr"] for j in jobs) == [0.01, 0.1]
    again = enqueue("--cmd", "python train.py --lr {lr} --out {workdir}", "lr={{0.1,0.01}}",
                    "--json")
    assert json.loads(again.stdout) == {"created": [], "skipped": 2}, "duplicates skipped"
    bad = enqueue("--cmd", "python train.py --lr {rate}", "lr=0.1")
    assert bad.returncode == 2 and "{rate}" in bad.stderr and bad.stderr.count("\n") == 1
    assert enqueue("--shell", "pkg.exp").returncode == 2
    # The stored experiment runs as it is with dbdict run.
    stored = 'cmd:["python","-m","dbdict_worker.examples.cmd_step","--exit","{code}"]'
    r = dbdict(tmp_path, "run", stored, "code=0", "x=4", "--workdir", "w")
    assert r.returncode == 0, r.stderr
    assert read_conf(tmp_path / "w" / "current.conf")["result"] == 8
    assert only_dir(tmp_path, "w").name == "w"
