"""dbdict-worker: a PostgreSQL-backed experiment queue and worker daemon.

The experiment side needs only ``COMPLETE``, ``INCOMPLETE``, ``DD``, ``make`` and ``resolve``;
``Store`` (the database API) is imported on first use so experiments do not pay for SQLAlchemy.
"""
from __future__ import annotations

from typing import Any

from dbdict_worker.constants import COMPLETE, INCOMPLETE, RESTART_PRIORITY, Status
from dbdict_worker.state import DD, expand, flatten, make, resolve
from dbdict_worker.sweeps import geom, igeom, sweep

__version__ = "0.1.0"

__all__ = [
    "COMPLETE", "INCOMPLETE", "RESTART_PRIORITY", "Status", "DD", "expand", "flatten", "make",
    "resolve", "sweep", "geom", "igeom", "Store", "read_results",
]


def read_results(url: str | None = None, *, table: str | None = None, where: Any = None,
                 statuses: Any = None) -> Any:
    """The jobs of the database at ``url`` as a pandas DataFrame (``Store.dataframe``; the
    ``pandas`` extra). ``url`` as for ``Store.open``; None: ``DBDICT_DB``, else
    ``./dbdict.sqlite``."""
    import os

    from dbdict_worker.store import Store

    with Store.open(url or os.environ.get("DBDICT_DB") or None) as store:
        return store.dataframe(table=table, where=where, statuses=statuses)


def __getattr__(name: str) -> Any:
    if name == "Store":
        from dbdict_worker.store import Store

        return Store
    raise AttributeError(f"module 'dbdict_worker' has no attribute {name!r}")
