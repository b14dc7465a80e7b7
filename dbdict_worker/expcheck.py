"""What ``dbdict-enqueue`` checks of a function experiment before queueing it.

The enqueue often runs on a login node, where the experiment's imports (torch, CUDA) may be
missing or fail although the workers have them, and from the directory holding the code,
which the workers do not start in. So: a malformed path is refused; a module that imports
but lacks the function is refused (a typo every job would fail on); a module that cannot be
imported here, or raises while importing, is a warning and is enqueued anyway. The current
directory counts, as for ``python -m`` and ``dbdict run``, with a note saying how the workers
will find code found only there.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import sys
from typing import Iterator, Sequence

from dbdict_worker import state as statemod
from dbdict_worker.errors import ResolveError, UsageError


def check_experiment(experiment: str, *, import_code: bool = True,
                     cwd: str | None = None) -> list[str]:
    """Check a function experiment's dotted path; return the lines to tell the user (notes
    and warnings), or raise UsageError (exit 2) for a malformed path or a missing function.

    With ``import_code`` False (``--no-check``) only the path's syntax is checked: no user
    code runs. ``cwd`` is the directory the enqueue runs in (default: the current one).
    """
    statemod.check_experiment_path(experiment)
    if not import_code:
        return []
    cwd = os.path.abspath(cwd or os.getcwd())
    top = experiment.split(".", 1)[0]
    path = _path_without_cwd(cwd)
    notes = []
    if not _findable(top, path):
        path = [cwd, *path]
        if not _findable(top, path):
            return [f"note: {experiment} is not importable here (fine if the workers have "
                    "the code)"]
        notes.append(f"note: {top} is importable from the current directory only: start the "
                     f"workers with PYTHONPATH={shlex.quote(cwd)}, or install it (pip install "
                     "-e), for them to find it")
    try:
        # The user's module-level prints go to stderr: stdout may be --json output.
        with _sys_path(path), contextlib.redirect_stdout(sys.stderr):
            statemod.resolve(experiment)
    except ResolveError as exc:
        if exc.__cause__ is None:  # the module imported: the function or a submodule is missing
            raise UsageError(str(exc)) from None
        notes.append(f"warning: {exc} (enqueued anyway: fine if it imports on the workers; "
                     "--no-check skips importing it here)")
    except SystemExit as exc:  # a module that exits at import must not end the enqueue
        notes.append(f"warning: importing {top} called sys.exit({exc.code!r}) (enqueued anyway; "
                     "--no-check skips importing it here)")
    return notes


def _path_without_cwd(cwd: str) -> list[str]:
    """sys.path without the entry ``python -m``/``-c`` put first for the current directory
    (a console script's first entry is its bin directory, kept). The current directory
    given in PYTHONPATH or by an installed .pth file stays: the workers get those too."""
    path = list(sys.path)
    if path and (path[0] in ("", ".") or os.path.abspath(path[0]) == cwd):
        del path[0]
    return path


def _findable(module: str, path: Sequence[str]) -> bool:
    """Whether the top-level ``module`` can be found on ``path``, without importing it."""
    with _sys_path(path):
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # found but odd (no __spec__): resolve() will tell
            return True


@contextlib.contextmanager
def _sys_path(path: Sequence[str]) -> Iterator[None]:
    saved = sys.path[:]
    sys.path[:] = list(path)
    try:
        yield
    finally:
        sys.path[:] = saved
