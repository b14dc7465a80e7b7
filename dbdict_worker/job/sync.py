"""Keeping a job's workdir in the experiment root (exproot) with rsync (the README's "The
experiment root (exproot) and rsync" section).

An exproot is a local path or ``ssh://[user@]host:/abs/path`` / ``ssh://[user@]host:rel/path``
(relative to the remote home; no ``~`` expansion). Each job lives in
``<exproot>/<db>/<table>/<id>/`` (:meth:`ExpRoot.job`). Before a run the job's directory is
created and pulled into the local workdir; while it runs the workdir is pushed at save points,
at most every ``push_interval`` seconds, while the experiment waits (:class:`SavePusher`), so
a push never copies files of a later state than the ``current.conf`` it carries; after the run
it is pushed once more. Files named ``*.no_sync`` are never transferred. Pushes never delete
remote files.

Each transfer puts its files in place together at its end (``--delay-updates``), so one cut
short leaves the previous push whole, and compares modification times to the nanosecond
(``--modify-window=-1``): a checkpoint rewritten with the same size within the second of the
last push is still copied.

Only argument lists are run, never shell strings. rsync gets ``-s`` (``--protect-args``), so
the remote shell never parses the path; the one place a remote shell parses text is the
``mkdir -p`` sent over ssh, where the path is quoted with :func:`shlex.quote`. The ssh command
comes from ``DBDICT_RSYNC_RSH`` (default ``ssh -o BatchMode=yes -o ConnectTimeout=10``): rsync
gets it as ``-e``, our own ssh call splits it with shlex. Put ports, keys and jump hosts there
or in ``~/.ssh/config``. Every transfer is retried with exponential backoff and jitter.
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import tenacity

from dbdict_worker.errors import DbdictError, UsageError
from dbdict_worker.job.workdir import NO_SYNC_PATTERN
from dbdict_worker.names import safe_segment

log = logging.getLogger("dbdict_worker")

SSH_PREFIX = "ssh://"
RSH_ENV = "DBDICT_RSYNC_RSH"
DEFAULT_RSH = "ssh -o BatchMode=yes -o ConnectTimeout=10"
#: rsync exit codes worth no retry: usage/syntax, protocol incompatibility, unsupported action.
_PERMANENT = {1, 2, 4}
#: "Some files vanished before they could be transferred": the experiment removed a file
#: while we pushed; the final push after the run catches up.
_VANISHED = 24
_HOST = re.compile(r"(?:[A-Za-z0-9._%+-]+@)?[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\Z")


class SyncError(DbdictError):
    """An rsync or ssh step failed (after its retries, if it was worth retrying)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ExpRoot:
    """Where job directories live for good: a local path, or a path on an ssh host."""

    path: str
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ExpRoot":
        """``/local/path``, ``rel/local``, ``ssh://host:/abs``, ``ssh://user@host:rel``."""
        if not text or "\x00" in text or "\n" in text:
            raise UsageError(f"invalid exproot {text!r}")
        if text.startswith(SSH_PREFIX):
            rest = text[len(SSH_PREFIX):]
            host, sep, path = rest.partition(":")
            if not sep or not path or not _HOST.match(host):
                raise UsageError(f"invalid exproot {text!r}: expected ssh://[user@]host:/abs/path "
                                 f"or ssh://[user@]host:relative/path (set a port in "
                                 f"{RSH_ENV} or ~/.ssh/config)")
            return cls(_strip_slashes(path), host)
        if "://" in text:
            raise UsageError(f"invalid exproot {text!r}: only local paths and ssh:// are "
                             f"supported")
        return cls(os.path.abspath(os.path.expanduser(text)))

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    def child(self, *segments: object) -> "ExpRoot":
        """This root with safe single segments appended."""
        return ExpRoot(posixpath.join(self.path, *(safe_segment(s) for s in segments)),
                       self.host)

    def job(self, db: str, table: str, job_id: int) -> "ExpRoot":
        """``<exproot>/<db>/<table>/<id>`` (each part must be a safe single segment)."""
        return self.child(db, table, int(job_id))

    def rsync_arg(self) -> str:
        """The rsync operand naming this directory's contents (trailing slash)."""
        path = self.path.rstrip("/") + "/"
        return f"{self.host}:{path}" if self.host else path

    def __str__(self) -> str:
        return f"{SSH_PREFIX}{self.host}:{self.path}" if self.host else self.path


def _strip_slashes(path: str) -> str:
    stripped = path.rstrip("/")
    return stripped or "/"


@dataclass(frozen=True)
class SyncConfig:
    """How rsync and ssh are run and retried."""

    rsh: str = DEFAULT_RSH
    attempts: int = 5
    max_seconds: float = 300.0
    wait_initial: float = 1.0
    wait_max: float = 30.0
    push_interval: float = 60.0
    #: rsync --timeout: give up on a transfer that moves no data for this long.
    io_timeout: int = 120
    #: Bound on the ssh ``mkdir`` call.
    ssh_timeout: float = 120.0

    @classmethod
    def from_env(cls, **overrides: object) -> "SyncConfig":
        """Defaults, then ``DBDICT_RSYNC_RSH``, ``DBDICT_SYNC_ATTEMPTS``,
        ``DBDICT_SYNC_MAX_SECONDS``, ``DBDICT_SYNC_PUSH_INTERVAL``, then ``overrides``."""
        values: dict[str, object] = {}
        if os.environ.get(RSH_ENV, "").strip():
            values["rsh"] = os.environ[RSH_ENV]
        for name, key, conv in (("DBDICT_SYNC_ATTEMPTS", "attempts", int),
                                ("DBDICT_SYNC_MAX_SECONDS", "max_seconds", float),
                                ("DBDICT_SYNC_PUSH_INTERVAL", "push_interval", float)):
            text = os.environ.get(name, "").strip()
            if text:
                try:
                    values[key] = conv(text)
                except ValueError:
                    raise UsageError(f"{name}={text!r} is not a number") from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def rsh_argv(self) -> list[str]:
        try:
            argv = shlex.split(self.rsh)
        except ValueError as e:
            raise UsageError(f"{RSH_ENV}={self.rsh!r}: {e}") from None
        if not argv:
            raise UsageError(f"{RSH_ENV} is empty")
        return argv


class Syncer:
    """Pulls and pushes one job's local workdir from and to its directory in the exproot."""

    def __init__(self, remote: ExpRoot, local: str | os.PathLike,
                 config: SyncConfig | None = None) -> None:
        self.remote = remote
        self.local = Path(os.path.abspath(local))
        self.config = config or SyncConfig.from_env()
        self._lock = threading.Lock()  # one rsync at a time per job

    def __repr__(self) -> str:
        return f"Syncer({self.remote} <-> {self.local})"

    # --- the three operations ---------------------------------------------------------------

    def create_remote(self) -> None:
        """Create the job's directory in the exproot (``mkdir -p``)."""
        if not self.remote.is_remote:
            def mkdir() -> None:
                try:
                    os.makedirs(self.remote.path, exist_ok=True)
                except OSError as e:
                    # A shared filesystem that is away (NFS hiccup, unmounted, replaced for a
                    # moment) comes back: retried like rsync, not failed at once.
                    raise SyncError(f"cannot create {self.remote}: {e.strerror or e}") from None
            self._retry(f"create {self.remote}", mkdir)
            return
        # The remote shell parses this command line: the path is quoted, and mkdir gets `--`.
        argv = self.config.rsh_argv() + [
            self.remote.host, "mkdir -p -- " + shlex.quote(self.remote.path)]
        self._retry(f"create {self.remote}", lambda: self._run(argv, self.config.ssh_timeout))

    def pull(self) -> None:
        """Create the remote directory, then copy it into the local workdir (SyncError)."""
        self.create_remote()
        self.local.mkdir(parents=True, exist_ok=True)
        if not self.remote.is_remote and self._remote_empty():
            return  # a new job's directory: nothing to copy, no rsync to start
        self._retry(f"pull from {self.remote}", lambda: self._rsync(
            self.remote.rsync_arg(), str(self.local) + "/"))

    def _remote_empty(self) -> bool:
        """Whether the local remote directory holds nothing (unreadable counts as not)."""
        try:
            with os.scandir(self.remote.path) as entries:
                return next(entries, None) is None
        except OSError:
            return False  # let rsync meet the problem and report it as it does

    def push(self, *, attempts: int | None = None) -> None:
        """Copy the local workdir into the exproot (new and changed files; never deletes)."""
        self._retry(f"push to {self.remote}", lambda: self._rsync(
            str(self.local) + "/", self.remote.rsync_arg()), attempts=attempts)

    # --- running and retrying ---------------------------------------------------------------

    def rsync_argv(self, src: str, dst: str) -> list[str]:
        """The rsync command line for one transfer (an argument list)."""
        argv = ["rsync", "-a", "-s", "--delay-updates", "--modify-window=-1",
                f"--timeout={int(self.config.io_timeout)}", f"--exclude={NO_SYNC_PATTERN}"]
        if self.remote.is_remote:
            argv += ["-e", self.config.rsh]
        return argv + [src, dst]

    def _rsync(self, src: str, dst: str) -> None:
        with self._lock:
            self._run(self.rsync_argv(src, dst), None, ok=(0, _VANISHED))

    def _run(self, argv: list[str], timeout: float | None, ok: tuple[int, ...] = (0,)) -> None:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=timeout)
        except FileNotFoundError:
            raise SyncError(f"{argv[0]} is not installed (or not on PATH)",
                            permanent=True) from None
        except subprocess.TimeoutExpired:
            raise SyncError(f"{argv[0]} did not finish within {timeout:.0f} s") from None
        if proc.returncode in ok:
            return
        lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines()
                 if ln.strip()]
        detail = _first_useful(lines)
        raise SyncError(f"{argv[0]} exit {proc.returncode}" + (f": {detail}" if detail else ""),
                        permanent=argv[0] == "rsync" and proc.returncode in _PERMANENT)

    def _retry(self, what: str, fn: Callable[[], None], *, attempts: int | None = None) -> None:
        cfg = self.config
        attempts = cfg.attempts if attempts is None else attempts
        tried = [0]

        def once() -> None:
            tried[0] += 1
            fn()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, attempts))
            | tenacity.stop_after_delay(cfg.max_seconds),
            wait=tenacity.wait_random_exponential(multiplier=cfg.wait_initial, max=cfg.wait_max),
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, SyncError) and not e.permanent),
            before_sleep=lambda rs: log.info("%s failed (%s); retrying", what,
                                             rs.outcome.exception() if rs.outcome else "?"),
            reraise=True,
        )
        try:
            retrying(once)
        except SyncError as e:
            n = tried[0]
            raise SyncError(f"{what} failed after {n} attempt{'s' if n != 1 else ''}: {e}",
                            permanent=e.permanent) from None


def _first_useful(lines: list[str]) -> str:
    # rsync ends with generic "rsync error: ... (code 23) at main.c(...)" lines; the cause
    # (ssh's "Connection refused", "No such file or directory") comes before them.
    useful = [ln for ln in lines if not ln.startswith(("rsync error:", "rsync: connection "
                                                       "unexpectedly closed"))]
    text = (useful or lines or [""])[0]
    return text if len(text) <= 500 else text[:499] + "…"


class SavePusher:
    """Pushes a running job's workdir when its child asks, at a save point where it waits
    for the answer, in a thread of its own (the job's watching loop goes on meanwhile).

    The child asks at most once per push interval and waits, so requests never pile up. Each
    is one push attempt: a failure is logged and the next save point's push tries again (the
    final push after the run retries in full). ``allowed`` says whether pushing is still ours
    to do (False once the job was taken away: nothing is written over a new owner's copy).
    """

    def __init__(self, syncer: Syncer, *, allowed: Callable[[], bool] = lambda: True) -> None:
        self.syncer = syncer
        self.allowed = allowed
        self.pushes = 0
        self.failures = 0
        self._requests: list[Callable[[bool], None]] = []
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="dbdict-push", daemon=True)
        self._thread.start()

    def request(self, done: Callable[[bool], None]) -> None:
        """Push now (in the pusher's thread), then call ``done(pushed)`` there."""
        with self._cond:
            self._requests.append(done)
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread once the push in progress (if any) has ended; requests not yet
        started are answered False."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._requests and not self._closed:
                    self._cond.wait()
                if not self._requests:
                    return
                done = self._requests.pop(0)
                closed = self._closed
            pushed = False
            if not closed and self.allowed():
                try:
                    self.syncer.push(attempts=1)
                    pushed = True
                    self.pushes += 1
                except SyncError as e:
                    self.failures += 1
                    log.warning("%s (retried at the next save point; the job goes on)", e)
            done(pushed)
