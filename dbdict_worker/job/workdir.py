"""A job's working directory: the files a job's run reads and writes (the README's "The
workdir" section).

::

    <workdir>/
      orig.conf      the parameters the job started with (written on the first run only)
      current.conf   the last saved state, dbdict.* keys included (atomic; every flush, the end)
      stdout         the experiment's standard output, appended (fd 1, subprocesses included)
      stderr         its standard error, appended; tracebacks land here too
      ...            whatever the experiment writes (files named *.no_sync are never rsynced)

``current.conf`` also carries ``dbdict.status`` (RUNNING while a run is in progress, then the
final status), which is how ``dbdict run`` knows a directory is done or busy.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Mapping

from dbdict_worker import state as statemod
from dbdict_worker.constants import Status
from dbdict_worker.errors import DbdictError
from dbdict_worker.job.cmdexp import is_command

ORIG_CONF = "orig.conf"
CURRENT_CONF = "current.conf"
STDOUT = "stdout"
STDERR = "stderr"
#: Files matching this are left out of every rsync (scratch data, caches).
NO_SYNC_PATTERN = "*.no_sync"
#: Environment variable pointing at the job's scratch directory (removed after the run).
TEMPDIR_ENV = "DBDICT_EXPERIMENT_TEMPDIR"
#: Environment variable holding the workdir's absolute path.
WORKDIR_ENV = "DBDICT_WORKDIR"

# Reserved keys the .conf files carry besides the user's state: the run's status and error
# (current.conf), the experiment (orig.conf too, so that `dbdict run --file orig.conf` reruns
# it) and the workdir's own path.
STATUS_KEY = "dbdict.status"
ERROR_KEY = "dbdict.error"
EXPERIMENT_KEY = "dbdict.experiment"
WORKDIR_KEY = "dbdict.workdir"
#: The job a worker's current.conf was saved for (whose files sit beside it).
ID_KEY = "dbdict.id"

_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
#: Longest default workdir name (the hash suffix included): well under every filesystem's 255.
MAX_NAME = 100


class WorkdirError(DbdictError):
    """The working directory cannot be created or read (an ERR_START-class failure)."""


class EnvironmentFault(DbdictError):
    """This machine cannot start any job now (its workdir base is read-only or full, its
    exproot is not mounted, rsync is missing): the worker's fault, not the job's."""


#: What a file system says when it cannot take any workdir, whichever job's: read-only, full,
#: over quota, not ours to write, failing.
ENVIRONMENT_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES,
                                errno.EPERM, errno.EIO})
#: Bytes written (and removed) to learn that a new workdir's file system has room for its
#: first files.
PROBE_BYTES = 8192


def make_job_dir(base: str | os.PathLike, path: str | os.PathLike) -> None:
    """Create a job's directory ``path`` below the worker's ``base`` and make sure a file
    can be written there. EnvironmentFault when the file system refuses (see
    ENVIRONMENT_ERRNOS) or ``base`` itself cannot be made; WorkdirError when the job's own
    path is the problem (a file in the way, a name too long)."""
    base, path = Path(base), Path(path)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentFault(f"cannot create the workdir base {base}: "
                               f"{e.strerror or e}") from None
    probe = path / f".dbdict-probe{NO_SYNC_PATTERN[1:]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(bytes(PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        fault = EnvironmentFault if e.errno in ENVIRONMENT_ERRNOS else WorkdirError
        raise fault(f"cannot create workdir {path}: {describe_os_error(e)}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def describe_os_error(e: OSError) -> str:
    """An OSError's reason with its errno's name, lower case: ``no space left on device
    (ENOSPC)``, so that a log or dbdict.error says plainly what the system refused."""
    name = errno.errorcode.get(e.errno or 0)
    if not name or not e.strerror:
        return str(e)
    return f"{e.strerror[:1].lower()}{e.strerror[1:]} ({name})"


def default_name(experiment: str, params: Mapping[str, Any]) -> str:
    """A directory name for a local run: the experiment's last name and ``k=v`` pairs, with
    unsafe characters replaced, cut to a bounded length, and a hash of the experiment and all
    parameters so that different parameters never share a directory: ``pkg.exp`` with
    ``lr=0.1 n=3`` gives ``exp,lr=0.1,n=3-<10 hex digits>``.
    """
    user = statemod.user_keys(statemod.flatten(params))
    digest = hashlib.sha256(
        (experiment + "\0" + statemod.canonical_json(user)).encode("utf-8")
    ).hexdigest()[:10]
    base = "cmd" if is_command(experiment) else experiment.rsplit(".", 1)[-1]
    parts = [base] + [f"{k}={statemod.format_value(v)}" for k, v in sorted(user.items())]
    text = _UNSAFE.sub("_", ",".join(parts)).strip("._-") or "job"
    text = text[: MAX_NAME - len(digest) - 1].rstrip("._-,=")
    return f"{text}-{digest}"


class Workdir:
    """The files of one job's working directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(os.path.abspath(path))

    @property
    def orig_conf(self) -> Path:
        return self.path / ORIG_CONF

    @property
    def current_conf(self) -> Path:
        return self.path / CURRENT_CONF

    @property
    def stdout(self) -> Path:
        return self.path / STDOUT

    @property
    def stderr(self) -> Path:
        return self.path / STDERR

    def create(self) -> None:
        """Make the directory (and its parents); WorkdirError if that fails."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkdirError(f"cannot create workdir {self.path}: {e.strerror or e}") from None

    def read_current(self) -> dict[str, Any] | None:
        """current.conf as a flat dict (reserved keys included), or None if there is none."""
        return self._read(self.current_conf)

    def read_orig(self) -> dict[str, Any] | None:
        """orig.conf as a flat dict, or None if there is none."""
        return self._read(self.orig_conf)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            return statemod.read_conf(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise WorkdirError(f"cannot read {path}: {e.strerror or e}") from None
        except DbdictError as e:
            raise WorkdirError(f"{e}") from None

    def status(self) -> Status | None:
        """The ``dbdict.status`` recorded in current.conf, if any."""
        current = self.read_current()
        if not current or STATUS_KEY not in current:
            return None
        try:
            return Status.parse(current[STATUS_KEY])
        except ValueError:
            return None

    def write_orig(self, flat: Mapping[str, Any]) -> bool:
        """Write orig.conf unless it exists (first run only); True if written."""
        if self.orig_conf.exists():
            return False
        statemod.write_conf(self.orig_conf, flat)
        return True

    def write_current(self, flat: Mapping[str, Any]) -> None:
        """Replace current.conf atomically."""
        statemod.write_conf(self.current_conf, flat)

    def starting_state(self, state: Mapping[str, Any], *, resume: bool = True,
                       job_id: int | None = None) -> dict[str, Any]:
        """The user state a run starts from: current.conf's (a resumed job) if there is one
        and ``resume``, else ``state``. Reserved keys are dropped either way.

        current.conf wins over ``state`` (the database's copy) because it is the state the
        files beside it belong to: it is written at a save point, after the experiment's
        files, and a worker's job directory is only ever updated at save points, files and
        current.conf together. The database's copy, written for progress, may be saves ahead
        of it or behind it (a worker killed before writing); and a job whose database state has
        moved on always has a current.conf of its own (a run writes saves to the database
        only once it has stored one). With ``job_id`` (a worker's job), a current.conf that
        names no job is not such a save and ``state`` is used; one that names another job is
        refused (WorkdirError): its files are not this job's."""
        current = self.read_current() if resume else None
        if current is not None and job_id is not None:
            owner = current.get(ID_KEY)
            if owner is None:
                current = None
            elif owner != job_id:
                raise WorkdirError(f"{self.current_conf} belongs to job {owner}, not to job "
                                   f"{job_id}: move it away to run this job here")
        return statemod.user_keys(current if current is not None
                                  else statemod.flatten(state))

    def append_stderr(self, text: str) -> None:
        """Append text to workdir/stderr (best effort: a full disk must not hide the outcome)."""
        try:
            with open(self.stderr, "a", encoding="utf-8", errors="replace") as f:
                f.write(text if text.endswith("\n") else text + "\n")
        except OSError:
            pass
