"""A private, throwaway PostgreSQL server for the chaos soak (:mod:`tests.soak.chaos`).

Self-contained (the soak runs from an installed package, where ``tests/`` is absent), with the
approach of ``tests/pgserver.py``: ``initdb``/``pg_ctl`` from the machine's PostgreSQL
(``PG_BINDIR``, ``/usr/lib/postgresql/*/bin`` or ``PATH``), run as the ``postgres`` user via
``runuser`` when we are root (PostgreSQL refuses to run as root), listening on 127.0.0.1 only,
with a random password. Durable by default (fsync, synchronous commit, full page writes), as
a real queue's database would be; ``durable=False`` turns those off for quick runs.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path


def pg_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or None."""
    for cand in [os.environ.get("PG_BINDIR")] + sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if cand and (Path(cand) / "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def server_unavailable() -> str | None:
    """None if a private server can be started here, else why not."""
    if pg_bindir() is None:
        return "initdb not found (install PostgreSQL or set PG_BINDIR)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """``init()``, ``start()``, ``stop(mode)``, ``restart(down_seconds)``, ``url()``."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("initdb not found (install PostgreSQL or set PG_BINDIR)")
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.durable = durable
        self.port = free_port()
        self.user = "dbdict_chaos"
        self.password = secrets.token_hex(12)
        self._as_postgres = os.geteuid() == 0
        root.mkdir(parents=True)
        if self._as_postgres:
            shutil.chown(root, "postgres", "postgres")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        # A session of its own: the postmaster must not get the terminal's Ctrl-C (the driver
        # stops it itself, after the workers).
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=180,
                              start_new_session=True)

    def init(self) -> "PgServer":
        """initdb with password authentication and our settings."""
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                      "--pwfile", str(pwfile), "--auth=scram-sha-256", "-E", "UTF8",
                      "--locale=C", *(() if self.durable else ("--no-sync",)))
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"initdb failed: {e.stderr.strip()}") from None
        finally:
            pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# dbdict chaos soak\n")
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        return self

    def start(self) -> None:
        """Start and wait until it accepts connections (pg_ctl -w, 60 s at most)."""
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                      "-w", "-t", "60", "start")
        except subprocess.CalledProcessError as e:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {e.stderr.strip()}\n{tail}") from None

    def stop(self, mode: str = "fast") -> None:
        """Stop (``fast`` cuts the connections; ``immediate`` for cleanup); never raises."""
        if self.data.exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                      "-t", "60", "stop", check=False)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down for ``down_seconds`` (the outage itself), start again."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def url(self, database: str = "postgres") -> str:
        """The URL, password included (give it to workers in ``DBDICT_DB``, not in argv)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"


__all__ = ["PgServer", "free_port", "pg_bindir", "server_unavailable"]
