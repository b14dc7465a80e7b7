"""Runs a subprocess that writes to fds 1 and 2 and reports what it sees in its environment,
to show that a child's own subprocesses land in workdir/stdout and workdir/stderr."""
from __future__ import annotations

import os
import subprocess
import sys

from dbdict_worker import COMPLETE


def experiment(state, channel):
    """Print from Python and from a subprocess; record environment facts in the state."""
    print("python stdout line")
    print("python stderr line", file=sys.stderr)
    subprocess.run(["sh", "-c", "echo subprocess stdout line; echo subprocess stderr line >&2"],
                   check=True)
    tempdir = os.environ.get("DBDICT_EXPERIMENT_TEMPDIR", "")
    state.tempdir = tempdir
    state.tempdir_exists = os.path.isdir(tempdir)
    state.cwd = os.getcwd()
    state.secrets = sorted(k for k in os.environ if k == "DBDICT_DB" or "PASSWORD" in k)
    state.gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    with open(os.path.join(tempdir, "scratch.bin"), "wb") as f:
        f.write(b"scratch")
    return COMPLETE
