"""Acceptance tests run the installed commands in subprocesses, as a user would."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


class Cli:
    """Runs ``dbdict``/``dbdict-enqueue`` with a database URL in DBDICT_DB."""

    def __init__(self, url: str, cwd: Path) -> None:
        self.url = url
        self.cwd = cwd

    def __call__(self, cmd: str, *args: str, ok: bool = True, env: dict | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
        full_env.update({"DBDICT_DB": self.url, "DBDICT_RETRY_SECONDS": "3"})
        full_env.update(env or {})
        proc = subprocess.run([str(BIN / cmd), *args], capture_output=True, text=True,
                              cwd=self.cwd, env=full_env, timeout=timeout)
        if ok:
            assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    def json(self, cmd: str, *args: str):
        return json.loads(self(cmd, *args).stdout)


@pytest.fixture
def cli(db_url, tmp_path) -> Cli:
    return Cli(db_url, tmp_path)


@pytest.fixture
def pg_cli(pg_url, tmp_path) -> Cli:
    return Cli(pg_url, tmp_path)


@pytest.fixture
def workers(tmp_path):
    """Starts worker daemons (``workers(url, name, *args)``); each is stopped at the end."""
    from tests.acceptance.workers import WorkerProc

    started: list[WorkerProc] = []

    def start(url: str, name: str, *args: str, **kw) -> WorkerProc:
        w = WorkerProc(url, tmp_path, name, *args, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:  # a test that failed may have left one stopped
            os.kill(w.pid, signal.SIGCONT)
        w.close()
