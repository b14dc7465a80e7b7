"""Provenance: where a job's code came from and where each attempt ran.

At enqueue, :func:`submission` collects the user, the host, the command line, the directory
and the version of the experiment's code: the git repository holding the experiment's module
(found without importing it) or, for a ``--cmd`` experiment, the current directory; its HEAD
commit, whether it has uncommitted changes, and a sha256 of ``git diff HEAD``. A worker
computes :func:`run_info` once (Python and dbdict versions, the GPU models it hands to its
jobs) and its bookings record it in ``jobs.run_info``.

Nothing here may fail an enqueue or a worker: ``git`` or ``nvidia-smi`` missing, slow or
failing, a directory outside any repository, all give None (NULL in the database).
"""
from __future__ import annotations

import getpass
import glob
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

#: Seconds one ``git`` or ``nvidia-smi`` call may take before we give up on its answer.
TOOL_TIMEOUT = 10.0

# Git's output must not depend on the user's configuration or locale: a diff hash is only
# comparable if the same changes always give the same bytes.
_GIT_CONFIG = ("-c", "color.ui=never", "-c", "core.quotepath=off", "-c", "diff.noprefix=false",
               "-c", "diff.mnemonicPrefix=false", "-c", "diff.relative=false")
_GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
            "GIT_PAGER": "cat", "GIT_EXTERNAL_DIFF": ""}


def _run(argv: Sequence[str], cwd: str | None = None, env: dict | None = None) -> bytes | None:
    """The standard output of ``argv`` (never through a shell), or None if the program is
    missing, fails or takes longer than :data:`TOOL_TIMEOUT`."""
    try:
        proc = subprocess.run(list(argv), cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=TOOL_TIMEOUT, env={**os.environ, **(env or {})})
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _git(directory: str, *args: str) -> bytes | None:
    return _run(["git", *_GIT_CONFIG, "-C", directory, *args], env=_GIT_ENV)


# --------------------------------------------------------------------------------------------
# At enqueue


def module_file(experiment: str) -> str | None:
    """The file of the top-level package or module of a dotted experiment path, found
    without importing anything (``importlib.util.find_spec`` of a submodule would import its
    parent packages); looked up on ``sys.path``, then in the current directory."""
    top = experiment.split(".", 1)[0]
    if not top.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing gets imported
        if spec is None:
            spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd()])
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return spec.origin
    locations = list(spec.submodule_search_locations or ())
    return locations[0] if locations else None


def git_state(path: str | os.PathLike, *, file: str | None = None) -> dict[str, Any]:
    """The git facts of the repository holding ``path`` (a file or a directory): the columns
    ``git_repo``, ``git_commit``, ``git_dirty``, ``git_diff_hash`` (all None outside a
    repository or without git).

    Dirty means uncommitted changes to tracked files (staged or not); untracked files do not
    count (build outputs and data would make every checkout dirty), except ``file`` itself,
    the experiment's own module, when git does not track it: its content is then part of the
    hash, since the commit does not hold the code that runs."""
    facts: dict[str, Any] = dict.fromkeys(("git_repo", "git_commit", "git_dirty",
                                           "git_diff_hash"))
    if shutil.which("git") is None:
        return facts
    p = Path(path)
    directory = str(p if p.is_dir() else p.parent)
    top = _git(directory, "rev-parse", "--show-toplevel")
    if not top:
        return facts
    repo = top.decode(errors="replace").strip()
    facts["git_repo"] = repo
    head = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD")
    if not head:  # a repository without a commit yet
        return facts
    facts["git_commit"] = head.decode().strip()
    diff = _git(repo, "diff", "--no-ext-diff", "--no-textconv", "--binary", "HEAD", "--")
    if diff is None:
        return facts
    digest = hashlib.sha256(diff)
    dirty = bool(diff)
    if file is not None and os.path.isfile(file) and \
            _git(repo, "ls-files", "--error-unmatch", "--", file) is None:
        dirty = True
        digest.update(b"\0untracked " + os.path.relpath(file, repo).encode() + b"\0")
        try:
            digest.update(Path(file).read_bytes())
        except OSError:
            pass
    facts["git_dirty"] = dirty
    facts["git_diff_hash"] = digest.hexdigest() if dirty else None
    return facts


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        return None


def submission(experiment: str | None, *, argv: Sequence[str] | None = None,
               cwd: str | None = None, is_command: bool = False,
               code: bool = True) -> dict[str, Any]:
    """The provenance of one enqueue, as the columns of ``submissions`` (for
    ``Store.enqueue(..., submission=...)``): user, host, the command line (a JSON list; the
    program's directory left out), the current directory and, with ``code``, the git facts of
    the experiment's code (:func:`git_state`) — of its module's repository, or of ``cwd``
    for a command experiment (``is_command``) or a module not found here."""
    cwd = cwd or os.getcwd()
    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = os.path.basename(args[0])
    facts: dict[str, Any] = {"user": _user(), "host": socket.gethostname(),
                             "command": json.dumps(args, ensure_ascii=False), "cwd": cwd}
    if code:
        file = None if is_command or not experiment else module_file(experiment)
        facts.update(git_state(file or cwd, file=file if file and file.endswith(".py") else None))
    return facts


# --------------------------------------------------------------------------------------------
# At each attempt


def dbdict_version() -> str:
    """The installed version of dbdict-worker."""
    try:
        from importlib.metadata import version

        return version("dbdict-worker")
    except Exception:  # running from a source tree that is not installed
        from dbdict_worker import __version__

        return __version__


def _visible(devices: Sequence[str] | None) -> list[str] | None:
    """The GPUs a job may see, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs); None:
    all of them."""
    if devices is not None:
        return [d.strip() for d in devices if d.strip()]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return None
    return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]


def gpu_names(devices: Sequence[str] | None = None) -> list[str]:
    """The models of the GPUs ``devices`` names (CUDA_VISIBLE_DEVICES entries; None: those
    of this process's CUDA_VISIBLE_DEVICES, or every GPU when it is unset), from nvidia-smi,
    else from /proc/driver/nvidia (indices taken in PCI bus order); [] when there are none."""
    want = _visible(devices)
    if want == []:
        return []
    found: list[tuple[str, str, str]] = []  # (index, uuid, name)
    if shutil.which("nvidia-smi"):
        out = _run(["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"])
        for line in (out or b"").decode(errors="replace").splitlines():
            parts = [p.strip() for p in line.split(",", 2)]
            if len(parts) == 3:
                found.append((parts[0], parts[1], parts[2]))
    if not found:
        for i, info in enumerate(sorted(glob.glob("/proc/driver/nvidia/gpus/*/information"))):
            try:
                text = Path(info).read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("Model:"):
                    found.append((str(i), "", line.split(":", 1)[1].strip()))
    if want is None:
        return [name for _, _, name in found]
    names = []
    for dev in want:
        for index, uuid, name in found:
            if dev == index or (uuid and dev.startswith("GPU-") and uuid.startswith(dev)):
                names.append(name)
                break
    return names


def run_info(gpus: Sequence[str] | None = None) -> dict[str, Any]:
    """The facts of an attempt that a worker knows once for all its jobs: Python's version,
    dbdict's, and the models of the GPUs it hands out (``gpus``: its ``--gpus`` list; jobs
    on different slots see different ones, this is all of them), None without any."""
    names = gpu_names(gpus)
    return {"python": platform.python_version(), "version": dbdict_version(),
            "gpus": ", ".join(names) if names else None}


def run_info_json(gpus: Sequence[str] | None = None) -> str:
    """:func:`run_info` as the JSON text stored in ``jobs.run_info``."""
    return json.dumps(run_info(gpus), ensure_ascii=False, sort_keys=True)
