"""Running real ``dbdict-worker start`` processes in tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent


class WorkerProc:
    """One ``dbdict-worker start`` subprocess; its stderr goes to a log file."""

    def __init__(self, url: str, tmp: Path, name: str, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = tmp / f"{name}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
        full_env.update({"DBDICT_DB": url, "DBDICT_SAVE_INTERVAL": "0.2"})
        full_env.update(env or {})
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(BIN / "dbdict-worker"), "start", *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=tmp)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        wait_for(lambda: text in self.log() or self.proc.poll() is not None, timeout,
                 f"{text!r} in the worker's log")
        assert text in self.log(), self.log()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker did not exit in {timeout}s:\n{self.log()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or exiting while we read
        return False
    return "zombie" not in status
