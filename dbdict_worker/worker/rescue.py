"""Requeueing the jobs of workers that stopped heartbeating.

Any live worker does it, at each of its own heartbeats: a job is stale once its heartbeat is
older than the lease (on PostgreSQL, never counted from before the server's start, so after a
restart every worker gets a whole lease to come back). A worker that has seen no failure of
its own judges from its first heartbeat, so a job whose owner died long ago is rescued at
once; after a failure of its own it waits a lease: an outage that every worker saw (the
network) leaves every heartbeat old, and judging others by it at once would take running jobs
away from live workers before they could renew. Taking a job away is safe either way: an owner
that could not renew pauses its copy before the lease ends (:mod:`.lease`).
"""
from __future__ import annotations

import logging

from dbdict_worker.store import Rescued
from dbdict_worker.worker.ports import QueueStore
from dbdict_worker.worker.writes import Outage

log = logging.getLogger("dbdict_worker.worker")


class Rescuer:
    """Requeues jobs whose heartbeat is older than ``lease``, as ``worker_id``."""

    def __init__(self, store: QueueStore, outage: Outage, worker_id: str,
                 lease: float) -> None:
        self.store = store
        self.outage = outage
        self.worker_id = worker_id
        self.lease = lease

    def rescue(self) -> list[Rescued]:
        """Requeue what is stale, if this worker may judge now; returns what it requeued."""
        if not self.outage.healthy_for(self.lease):
            return []  # our own view of the database is too recent to judge others' heartbeats
        rescued = self.outage.call(
            lambda: self.store.requeue_stale(self.lease, by_worker=self.worker_id)) or []
        for r in rescued:
            log.warning("job %d: owner %s stopped heartbeating; now %s", r.job_id,
                        r.worker_id, r.status.name)
        return rescued
