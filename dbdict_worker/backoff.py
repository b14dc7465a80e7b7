"""Doubling delays: ``base * 2**(n-1)``, capped, with an optional jitter.

One formula for every "wait longer each time" of the package: restarts without progress
(:mod:`dbdict_worker.worker.restarts`), retries of failed attempts (:mod:`dbdict_worker.retrying`),
a worker's pauses while its machine cannot start jobs (:mod:`dbdict_worker.worker.environment`)
and its pauses between calls while the database is away (:mod:`dbdict_worker.worker.writes`).
"""
from __future__ import annotations

import random
from typing import Callable


def doubling(n: int, base: float, cap: float, *, jitter: float = 0.0,
             rand: Callable[[], float] = random.random) -> float:
    """The ``n``-th delay (n >= 1; below counts as 1): ``min(base * 2**(n-1), cap)``, then
    scaled by a random factor in ``1 ± jitter`` (``rand()`` in [0, 1)), so that things that
    failed together do not all come back at the same instant. With ``jitter`` under 1/3 each
    delay below the cap is still longer than the one before."""
    exponent = min(max(n, 1) - 1, 64)  # bounded: 2**64 is far past any cap
    delay = min(base * 2.0 ** exponent, cap)
    if jitter:
        delay *= 1.0 + jitter * (2.0 * rand() - 1.0)
    return delay
