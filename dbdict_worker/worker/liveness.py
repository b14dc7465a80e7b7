"""When a worker counts as alive: the rule behind ``start --lease``, ``status`` and ``drain``.

A worker renews its heartbeat every ``--heartbeat`` seconds; a RUNNING job whose heartbeat is
older than ``--lease`` is requeued by any live worker. The same lease tells ``dbdict-worker
status`` and ``drain`` that a worker is *lost* (killed, its machine gone): the workers table
does not record each worker's lease, so they use the default (60 s) unless given ``--lease``
(or ``DBDICT_LEASE``, the variable the workers read too).
"""
from __future__ import annotations

import dataclasses

from dbdict_worker.db.models import WorkerRow
from dbdict_worker.db.workers import STOPPED
from dbdict_worker.errors import UsageError

#: The worker's defaults (``dbdict-worker start --heartbeat/--lease``).
DEFAULT_HEARTBEAT = 10.0
DEFAULT_LEASE = 60.0
#: A lease must outlast this many heartbeats: one late beat (a slow database, a busy host)
#: must not get a live worker's jobs requeued under it.
MIN_LEASE_HEARTBEATS = 3
#: The state ``status`` shows for a worker whose heartbeat is older than the lease.
LOST = "lost"


def check_lease(lease: float, heartbeat: float) -> None:
    """UsageError (one line: why, and what would work) for a lease under 3 heartbeats."""
    if lease >= MIN_LEASE_HEARTBEATS * heartbeat:
        return
    raise UsageError(
        f"--lease {lease:g} is under {MIN_LEASE_HEARTBEATS} heartbeats of {heartbeat:g}s: "
        f"a single late heartbeat would get running jobs requeued; use --lease "
        f"{MIN_LEASE_HEARTBEATS * heartbeat:g} or more, or --heartbeat "
        f"{lease / MIN_LEASE_HEARTBEATS:.3g} or less")


def is_lost(state: str, heartbeat_age: float | None, lease: float) -> bool:
    """A worker that has not stopped but whose last heartbeat is older than ``lease``."""
    return state != STOPPED and heartbeat_age is not None and heartbeat_age > lease


def mark_lost(row: WorkerRow, lease: float) -> WorkerRow:
    """``row`` with its state shown as ``lost`` when its heartbeat is older than ``lease``."""
    if is_lost(row.state, row.heartbeat_age, lease):
        return dataclasses.replace(row, state=LOST)
    return row


def drain_summary(asked: list[str], lost: list[str], lease: float) -> str:
    """What ``dbdict-worker drain`` prints: the workers asked, and the lost ones skipped."""
    if asked:
        text = f"draining {len(asked)} worker(s): {' '.join(asked)}"
    else:
        text = "no running worker matched"
    if lost:
        text += (f"; {len(lost)} lost worker(s) skipped (no heartbeat for over {lease:g}s): "
                 + " ".join(lost))
    return text
