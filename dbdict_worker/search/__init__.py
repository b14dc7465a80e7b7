"""``dbdict search``: Optuna's samplers and pruners choosing the next jobs from the results so
far. The trials are ordinary jobs; the search's state lives in the database.

Needs the optional extra: ``pip install 'dbdict-worker[search]'``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["run", "load_space", "Space", "SAMPLERS", "PRUNERS"]

#: The samplers and pruners a search can use (Optuna's; named here, where the command line
#: can read them without importing Optuna).
SAMPLERS = ("tpe", "random", "cmaes", "grid", "qmc")
PRUNERS = ("none", "median", "asha", "hyperband")


def run(*args: Any, **kwargs: Any) -> Any:
    """See :func:`dbdict_worker.search.driver.run`."""
    from dbdict_worker.search.driver import run as _run

    return _run(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("load_space", "Space"):
        from dbdict_worker.search import space

        return getattr(space, name)
    raise AttributeError(name)
