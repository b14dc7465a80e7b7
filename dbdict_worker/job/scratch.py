"""Jobs' private scratch directories ($DBDICT_EXPERIMENT_TEMPDIR lives in one), and removing
those that a dead process left behind.

A job's directory is removed by the process that made it (a worker, ``dbdict run``) when the
job ends. When that process was killed (``kill -9``, the OOM killer, a node reboot without a
tmpfs) the directory stays; the next worker on the host removes it with
:func:`remove_dead`. To tell whose it is, the directory's name carries its maker's pid and
the start time of that process (``dbdict-job-<pid>.<start>-XXXXXXXX``: a pid reused by
another process has another start time), and a file ``job.pid`` in it names the job's own
process (the leader of the job's process group) the same way. A directory is removed only
when both are gone and no process is left in the job's group: an orphaned job still running
(it stops itself at its lease's end) keeps its scratch space. Only directories of this user
with this exact name pattern are touched.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

log = logging.getLogger("dbdict_worker")

PREFIX = "dbdict-job-"
#: The job's process, written in the directory once it is started.
JOB_PID_FILE = "job.pid"
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)\.(\d+)-[A-Za-z0-9_]+")


def start_time(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22); 0 if
    that cannot be read (no /proc: then a pid alone identifies a process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def make_private_dir(base: str | None = None) -> str:
    """A new private directory for a job, named for this process (see the module doc)."""
    pid = os.getpid()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{pid}.{start_time(pid)}-", dir=base)


def mark_job(private_dir: str, pid: int) -> None:
    """Record the job's process (pid and start time) in its directory."""
    try:
        with open(os.path.join(private_dir, JOB_PID_FILE), "w", encoding="ascii") as f:
            f.write(f"{pid} {start_time(pid)}\n")
    except OSError:  # the directory is gone already (the job ended): nothing to mark
        pass


def alive(pid: int, started: int) -> bool:
    """Whether process ``pid`` still runs and is the one that started at ``started``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a process of another user counts as alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    if fields[0] == b"Z":
        return False
    return not started or int(fields[19]) == started


def _group_alive(pgid: int) -> bool:
    """Whether any process is still in process group ``pgid`` (read from /proc)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return False
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _job_alive(path: str) -> bool:
    try:
        with open(os.path.join(path, JOB_PID_FILE), encoding="ascii") as f:
            pid_text, started_text = f.read().split()
        pid, started = int(pid_text), int(started_text)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # unreadable: not ours to judge, keep it
        return True
    return alive(pid, started) or _group_alive(pid)


def remove_dead(base: str | None = None) -> list[str]:
    """Remove the private directories under ``base`` (default: the temporary directory)
    whose maker and job have both exited; returns their paths."""
    base = base or tempfile.gettempdir()
    uid = os.getuid()
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_dir(follow_symlinks=False) or st.st_uid != uid:
            continue
        if alive(int(match.group(1)), int(match.group(2))) or _job_alive(entry.path):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    if removed:
        log.info("removed %d job scratch director%s left by processes that died (in %s)",
                 len(removed), "y" if len(removed) == 1 else "ies", base)
    return removed
