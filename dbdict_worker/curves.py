"""The intermediate metrics jobs report (``channel.report(step, **metrics)``) read back: as
points, as curves by step, and as a pandas DataFrame (``Store.metrics``).

Long form (the default), one row per reported value, sorted by job, step, attempt and key:

- ``job_id`` (int64), ``attempt`` (int64), ``step`` (int64), ``key`` (text), ``value``
  (float64: NaN and infinities kept on PostgreSQL; SQLite stores a NaN as NULL, read as NaN),
  ``at`` (``datetime64[us, UTC]``, the database's clock when the row was written).

Wide form (``wide=True``): one row per job and step (a MultiIndex ``(job_id, step)``), one
float64 column per key. A resumed job's attempts make one curve: where two attempts reported
the same step, the later attempt's value is kept (the long form keeps both).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from dbdict_worker.db import curves as dbcurves
from dbdict_worker.db.curves import Point
from dbdict_worker.errors import UsageError

if TYPE_CHECKING:
    import pandas

    from dbdict_worker.store import Store

#: The long form's columns, in order.
COLUMNS = ("job_id", "attempt", "step", "key", "value", "at")

#: A curve: (step, value) pairs by step.
Curve = list[tuple[int, float | None]]


def points(store: Store, ids: Iterable[int] | None = None, *,
           table: str | Sequence[str] | None = None, where: Any = None,
           statuses: Any = None, keys: Sequence[str] | None = None,
           attempt: int | None = None) -> list[Point]:
    """The metrics of the selected jobs (as :meth:`Store.selection` selects them), by job,
    step, attempt and key, read in one statement."""
    keys = [keys] if isinstance(keys, str) else keys

    def run(conn: Any) -> list[Point]:
        sel = store.selection(conn, tables=table, where=where, statuses=statuses,
                              ids=list(ids) if ids is not None else None)
        return dbcurves.select(conn, sel, keys=keys, attempt=attempt)
    return store.transaction(run)


def by_step(rows: Iterable[Point]) -> dict[int, dict[str, Curve]]:
    """Per job, per key, the curve by step over all its attempts; a step two attempts
    reported (a resumed job redoing steps after its last save) keeps the later attempt's
    value. ``rows`` must be ordered by job, step and attempt (as they are read)."""
    out: dict[int, dict[str, dict[int, float | None]]] = {}
    for p in rows:
        out.setdefault(p.job_id, {}).setdefault(p.key, {})[p.step] = p.value
    return {job: {key: sorted(steps.items()) for key, steps in by_key.items()}
            for job, by_key in out.items()}


def thin(curve: Curve, most: int) -> Curve:
    """At most ``most`` points of ``curve``, evenly spaced, its first and last kept (a chart
    of 20 jobs x 100,000 steps would not draw faster for having them all)."""
    if len(curve) <= most or most < 2:
        return curve
    stride = (len(curve) - 1) / (most - 1)
    return [curve[round(i * stride)] for i in range(most)]


def need_pandas() -> Any:
    """The pandas module, or a one-line UsageError saying how to install it."""
    try:
        import pandas
    except ImportError:
        raise UsageError("Store.metrics needs pandas: pip install 'dbdict-worker[pandas]'") \
            from None
    return pandas


def metrics(store: Store, ids: Iterable[int] | None = None, *,
            table: str | Sequence[str] | None = None, where: Any = None,
            statuses: Any = None, keys: Sequence[str] | None = None,
            attempt: int | None = None, wide: bool = False) -> pandas.DataFrame:
    """The selected jobs' metrics as a DataFrame, long or wide (see the module's docstring).
    ``keys`` and ``attempt`` keep only those keys, that attempt."""
    pd = need_pandas()
    rows = points(store, ids, table=table, where=where, statuses=statuses, keys=keys,
                  attempt=attempt)
    df = frame(pd, rows)
    return widen(pd, df) if wide else df


def frame(pd: Any, rows: Sequence[Point]) -> pandas.DataFrame:
    """The long form of ``rows``, typed."""
    import numpy as np

    from dbdict_worker.frames import TIME_DTYPE

    cols: Mapping[str, Any] = {
        "job_id": pd.Series(np.array([p.job_id for p in rows], dtype="int64")),
        "attempt": pd.Series(np.array([p.attempt for p in rows], dtype="int64")),
        "step": pd.Series(np.array([p.step for p in rows], dtype="int64")),
        "key": pd.Series([p.key for p in rows], dtype=_text_dtype(pd)),
        "value": pd.Series(np.array([np.nan if p.value is None else p.value for p in rows],
                                    dtype="float64")),
        "at": pd.Series(pd.to_datetime([p.at for p in rows], utc=True)).astype(TIME_DTYPE),
    }
    return pd.DataFrame(cols, columns=list(COLUMNS))


def widen(pd: Any, df: pandas.DataFrame) -> pandas.DataFrame:
    """The wide form of a long frame: index (job_id, step), one column per key (sorted); a
    step reported by several attempts keeps the latest attempt's value."""
    last = (df.sort_values(["job_id", "step", "attempt"], kind="stable")
            .drop_duplicates(["job_id", "step", "key"], keep="last"))
    if last.empty:
        index = pd.MultiIndex.from_arrays([pd.Series([], dtype="int64")] * 2,
                                          names=["job_id", "step"])
        return pd.DataFrame(index=index)
    wide = last.pivot(index=["job_id", "step"], columns="key", values="value")
    wide = wide.reindex(columns=sorted(wide.columns)).astype("float64")
    wide.columns.name = None
    return wide


def _text_dtype(pd: Any) -> Any:
    # As Store.dataframe's text columns: pandas 3's "str", object before.
    return "str" if int(pd.__version__.split(".")[0]) >= 3 else object
