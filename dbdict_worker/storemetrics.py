"""The :class:`~dbdict_worker.store.Store` calls of intermediate metrics and pruning
(``db/metrics.py``), kept here so store.py stays small."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from dbdict_worker.db import metrics as metricsq
from dbdict_worker.db.connect import Connection
from dbdict_worker.db.models import MetricRow

class MetricCalls:
    """Mixed into Store (which provides :meth:`transaction`)."""

    transaction: Callable[[Callable[[Connection], Any]], Any]

    def put_metrics(self, rows: Sequence[MetricRow]) -> int:
        """Store reported metrics in one upsert (a repeated job, attempt, step and key keeps
        the latest value); returns the rows written. Rows of deleted jobs are left out."""
        return self.transaction(lambda c: metricsq.insert(c, rows)) if rows else 0

    def metric_rows(self, job_ids: Iterable[int], *, attempt: int | None = None,
                    keys: Iterable[str] | None = None) -> list[MetricRow]:
        """The reported metrics of these jobs (of one attempt, of some keys), ordered by job,
        attempt, step and key."""
        ids = list(job_ids)
        wanted = None if keys is None else list(keys)
        return self.transaction(
            lambda c: metricsq.select(c, ids, attempt=attempt, keys=wanted)) if ids else []

    def request_prune(self, ids: Iterable[int], *, reason: str = "pruned") -> list[int]:
        """End these jobs early (a search's pruner): a RUNNING job is flagged, its worker tells
        the experiment (``channel.switch()`` returns 'prune') and it ends PRUNED; a START job
        ends PRUNED at once. Returns the ids changed (the others had ended or were flagged)."""
        wanted = list(ids)
        return self.transaction(
            lambda c: metricsq.request_prune(c, wanted, reason)) if wanted else []
