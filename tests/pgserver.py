"""A private PostgreSQL server for tests that need one to themselves: password
authentication, restarts in the middle of a run, outages.

It is started with ``initdb``/``pg_ctl`` from the machine's PostgreSQL; when the tests run as
root (PostgreSQL refuses to), the server runs as the ``postgres`` system user via
``runuser``. Only loopback is listened on.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path | None:
    for cand in [os.environ.get("PG_BINDIR")] + sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if cand and (Path(cand) / "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """None if a private server can be started here, else the reason why not."""
    if _bindir() is None:
        return "initdb not found (install PostgreSQL or set PG_BINDIR)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    return None


class PrivateServer:
    """A throwaway PostgreSQL cluster: ``start()``, ``stop()``, ``restart()``, ``url(...)``."""

    def __init__(self, *, password: str = "s3cr3t-Pa55") -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self.password = password
        self.user = "dbdict_test"
        self.root = Path(tempfile.mkdtemp(prefix="dbdict-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> "PrivateServer":
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                  "--pwfile", str(pwfile), "--auth=scram-sha-256", "-E", "UTF8",
                  "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C")
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                    "max_connections = 100\n")
        return self

    def start(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                  "stop", check=False)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (fast: connections are cut), stay down for a while, start again."""
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)  # the outage itself is what is being tested
        self.start()

    def url(self, *, password: str | None = None, database: str = "postgres") -> str:
        pw = self.password if password is None else password
        return f"postgresql://{self.user}:{pw}@127.0.0.1:{self.port}/{database}"

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _has_c_utf8() -> bool:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    return "c.utf8" in out or "c.utf-8" in out
