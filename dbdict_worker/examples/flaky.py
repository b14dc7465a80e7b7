"""An experiment that fails its first attempts, then succeeds: for retries.

Parameters: ``counter``, a file path (required) where the attempts are counted (it survives
the job's workdir, so a retry on any worker that shares it sees the count); ``failures``, how
many attempts fail first (default 2). Attempt n (1-based) raises ``FlakyError("flaky failure
n of F")`` while n <= F; the next one stores ``result = n`` and completes.
"""
from __future__ import annotations

import os


class FlakyError(RuntimeError):
    """The deliberate, passing failure."""


def experiment(state, channel):
    """Count this attempt in ``state.counter``; fail the first ``failures`` of them."""
    path = state.counter
    try:
        with open(path, encoding="utf-8") as f:
            n = int(f.read().strip() or 0) + 1
    except FileNotFoundError:
        n = 1
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(str(n))
    os.replace(tmp, path)
    failures = state.get("failures", 2)
    if n <= failures:
        raise FlakyError(f"flaky failure {n} of {failures}")
    state.result = n
