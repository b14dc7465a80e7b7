"""Results as a pandas DataFrame (``Store.dataframe``, ``dbdict_worker.read_results``) and as
a parquet file (``dbdict export --format parquet``).

One row per job, by id; the columns of the flat SQL view (``dbdict view``): the reserved
``dbdict.*`` keys, then one column per state key, typed as the view types it:

- integers: ``Int64`` (nullable; ``int64`` for ``dbdict.id``, ``attempts``, ``replica``,
  which are never NULL); floats: ``float64`` (nan and inf kept; a missing value is nan too);
- booleans: ``boolean`` (nullable); times: ``datetime64[us, UTC]``;
- text, and keys whose values have mixed types (bools as True/False, lists as Python
  literals): pandas' string dtype (``str`` in pandas 3, ``object`` before).

The job id stays an ordinary column (``dbdict.id``) under a RangeIndex, so the columns are
exactly the view's and the export's; ``df.set_index("dbdict.id")`` indexes by it.
pandas is an optional extra, imported on first use.
"""
from __future__ import annotations

import os
import uuid
from typing import IO, TYPE_CHECKING, Any, Sequence

from dbdict_worker.db import frames as dbframes
from dbdict_worker.db.frames import BOOL, FLOAT, INT, TEXT, TIME, FrameColumn
from dbdict_worker.errors import UsageError

if TYPE_CHECKING:
    import pandas

    from dbdict_worker.store import Store

#: Times in the frame: microseconds, as both databases store them.
TIME_DTYPE = "datetime64[us, UTC]"


def need_pandas() -> Any:
    """The pandas module, or a one-line UsageError saying how to install it."""
    try:
        import pandas
    except ImportError:
        raise UsageError("Store.dataframe needs pandas: pip install 'dbdict-worker[pandas]'") \
            from None
    return pandas


def _text_dtype(pd: Any) -> Any:
    # pandas 3's default string dtype ("str": NaN for missing); before 3, "str" meant
    # object with None spelled 'None', so keep object there.
    return "str" if int(pd.__version__.split(".")[0]) >= 3 else object


def _dtype(pd: Any, col: FrameColumn) -> Any:
    if col.kind == INT:
        return "Int64" if col.nullable else "int64"
    if col.kind == FLOAT:
        return "float64"
    if col.kind == BOOL:
        return "boolean"
    return _text_dtype(pd)  # text, and times until parsed


def dataframe(store: Store, *, tables: str | Sequence[str] | None = None,
              where: Any = None, statuses: Any = None,
              ids: Sequence[int] | None = None) -> pandas.DataFrame:
    """The selected jobs (as :meth:`Store.selection` selects them) as a DataFrame: see the
    module's docstring for the columns and their dtypes. Read in one statement."""
    pd = need_pandas()

    def run(conn: Any) -> pandas.DataFrame:
        sel = store.selection(conn, tables=tables, where=where, statuses=statuses, ids=ids)
        stmt, cols = dbframes.frame_select(conn, sel)
        if store.target.is_sqlite:
            return _from_rows(pd, cols, dbframes.fetch_rows(conn, stmt))
        return _copied(pd, cols, lambda out: dbframes.copy_csv(conn, stmt, cols, out))

    return store.transaction(run)


def _copied(pd: Any, cols: list[FrameColumn], copy: Any) -> pandas.DataFrame:
    """The frame parsed (:func:`_from_csv`) while ``copy(out)`` writes the CSV into
    ``out``: through a pipe to a reading thread, so that the CSV text (larger than the
    frame) is never held whole in memory."""
    import threading

    rfd, wfd = os.pipe()
    got: dict[str, Any] = {}

    def read() -> None:
        with open(rfd, "rb", buffering=1 << 20) as src:
            try:
                got["df"] = _from_csv(pd, cols, src)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the writer below
                got["error"] = exc
            # Closing the read end makes a writer still writing fail (BrokenPipeError)
            # instead of waiting forever on a full pipe.

    reader = threading.Thread(target=read, name="dbdict-frame-reader", daemon=True)
    reader.start()
    try:
        with open(wfd, "wb", buffering=1 << 20) as sink:
            copy(sink)
    except BrokenPipeError:
        reader.join()
        raise got.get("error") or BrokenPipeError("the frame's reader stopped") from None
    finally:
        reader.join()
    if "error" in got:
        raise got["error"]
    return got["df"]


def _from_csv(pd: Any, cols: list[FrameColumn], src: IO[bytes]) -> pandas.DataFrame:
    """The frame from :func:`dbdict_worker.db.frames.copy_csv`'s CSV read from ``src``,
    parsed by pandas' C reader with each column's dtype given (nothing inferred)."""
    if not src.peek(1):  # no rows: read_csv would refuse an empty text
        return _from_rows(pd, cols, [])
    names = [c.name for c in cols]
    df = pd.read_csv(
        src, header=None, names=names, encoding="utf-8",
        dtype={c.name: _dtype(pd, c) for c in cols},
        # NULL is an empty field; text is marked, so no string is ever taken for NULL;
        # PostgreSQL spells a float NaN as NaN (nan either way), inf as Infinity.
        keep_default_na=False,
        na_values={c.name: ["", "NaN"] if c.kind == FLOAT else [""] for c in cols},
        true_values=["t"], false_values=["f"], **_exact_floats(pd))
    for c in cols:
        if c.kind == TEXT:
            df[c.name] = df[c.name].str.slice(len(dbframes.TEXT_MARK))
        elif c.kind == TIME:
            df[c.name] = _times(pd, df[c.name])
    return df


def _exact_floats(pd: Any) -> dict[str, str]:
    # pandas 3 parses floats exactly by default (and deprecates the option); 2 needs asking.
    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def _from_rows(pd: Any, cols: list[FrameColumn], rows: list[tuple]) -> pandas.DataFrame:
    """The frame from DBAPI rows, built column by column (SQLite: times as text, booleans
    as 0/1)."""
    import numpy as np

    columns = list(zip(*rows)) if rows else [() for _ in cols]
    data = {}
    for c, values in zip(cols, columns):
        if c.kind == FLOAT:
            data[c.name] = pd.Series(np.array(values, dtype="float64"))
        elif c.kind == TIME:
            data[c.name] = _times(pd, pd.Series(values, dtype=object))
        elif c.kind == TEXT:
            # NaN for missing, as read_csv gives on PostgreSQL (pandas 2's object columns
            # would keep None); SQLite's json_extract may give a number: its text.
            data[c.name] = pd.Series([v if isinstance(v, str) else np.nan if v is None
                                      else str(v) for v in values], dtype=_text_dtype(pd))
        else:
            data[c.name] = pd.Series(pd.array(list(values), dtype=_dtype(pd, c)))
    return pd.DataFrame(data, columns=[c.name for c in cols])


def _times(pd: Any, values: Any) -> Any:
    """ISO 8601 text (PostgreSQL's, with +00; SQLite's, naive UTC) or datetimes as UTC."""
    return pd.to_datetime(values, utc=True, format="ISO8601").astype(TIME_DTYPE)


def write_parquet(store: Store, path: str, **select: Any) -> int:
    """Write the selected jobs' frame to the parquet file ``path`` (pyarrow); returns the
    number of jobs written. A one-line UsageError if pandas or pyarrow is missing."""
    try:  # both now: to_parquet would fail later, with a longer message
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"parquet export needs pandas and pyarrow ({exc.name or 'one'} is "
                         "missing): pip install 'dbdict-worker[parquet]'") from None
    df = dataframe(store, **select)
    # Into a new file beside it, then renamed: a failed export leaves no half file (and
    # the file gets the usual permissions, which mkstemp's 0600 would not give).
    head, tail = os.path.split(os.path.abspath(path))
    tmp = os.path.join(head, f".{tail}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        df.to_parquet(tmp, engine="pyarrow", index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(df)
