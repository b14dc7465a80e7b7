"""Intermediate metrics put straight into the ``metrics`` table, as a worker would write
them, for the tests of their readers (``Store.metrics``, ``dbdict metrics``, the dashboard)."""
from __future__ import annotations

from typing import Iterable

import sqlalchemy as sa

from dbdict_worker.db.schema import metrics


def put(store, rows: Iterable[tuple[int, int, int, str, float | None]]) -> int:
    """Insert (job_id, attempt, step, key, value) rows; returns how many."""
    rows = [dict(zip(("job_id", "attempt", "step", "key", "value"), r)) for r in rows]
    if rows:
        store.transaction(lambda conn: conn.execute(sa.insert(metrics), rows))
    return len(rows)


def put_url(url: str, rows: Iterable[tuple[int, int, int, str, float | None]]) -> int:
    """:func:`put` through a store opened on ``url`` (and closed)."""
    from dbdict_worker.store import Store

    with Store.open(url, retry_seconds=5) as store:
        return put(store, rows)
