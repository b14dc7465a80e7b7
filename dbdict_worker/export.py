"""Export jobs as CSV or JSON: one row per job, one column per key (reserved keys first)."""
from __future__ import annotations

import csv
import io
import json
from typing import IO, Any, Iterable, Mapping

from dbdict_worker.db.models import Job
from dbdict_worker.records import RESERVED, RESERVED_KEYS, full_state
from dbdict_worker.state import format_value


def cell(value: Any) -> str:
    """A value as CSV text: empty for None, Python spelling for bools and floats (nan, inf),
    Python literals for lists (as in .conf files and the SQL view)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return format_value(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(out: IO[str], user_keys: Iterable[str],
              rows: Iterable[tuple[Job, Mapping[str, Any]]]) -> int:
    """Write a header and one line per job; returns the number of jobs written."""
    columns = list(RESERVED_KEYS) + sorted(user_keys)
    writer = csv.writer(out)
    writer.writerow(columns)
    n = 0
    for job, state in rows:
        flat = full_state(job, state)
        writer.writerow([cell(flat.get(c)) for c in columns])
        n += 1
    return n


class LineCounter(io.TextIOBase):
    """A text stream wrapper that counts the CSV records written through it (COPY output:
    a record ends with a newline outside quotes). A TextIOBase, so psycopg2 writes str."""

    #: Characters held before they are written to ``out`` in one call: COPY writes one
    #: call per row, and a million calls through to a text stream cost seconds.
    HOLD = 1 << 16

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out
        self.rows = -1  # the header is not a job
        self._quoted = False
        self._held: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if self._quoted or '"' in text:
            for part in text.split('"'):
                if not self._quoted:
                    self.rows += part.count("\n")
                self._quoted = not self._quoted
            self._quoted = not self._quoted  # n parts have n - 1 quotes between them
        else:  # the common row: no quote, so every newline ends a record
            self.rows += text.count("\n")
        self._held.append(text)
        self._size += len(text)
        if self._size >= self.HOLD:
            self.flush()
        return len(text)

    def flush(self) -> None:
        """Write what is held to ``out`` (not flushing ``out`` itself)."""
        if self._held:
            self.out.write("".join(self._held))
            self._held, self._size = [], 0


#: How JSON output writes the floats JSON has no literal for (NaN, Infinity, -Infinity):
#: ``string`` (the default) as the strings "NaN", "Infinity", "-Infinity", which every JSON
#: parser accepts and ``float()`` or JavaScript's ``Number()`` turn back into the number;
#: ``null``, losing which one it was; ``raw``, the bare NaN/Infinity that Python and
#: JavaScript's eval read but JSON.parse and jq reject.
JSON_NAN_FORMS = ("string", "null", "raw")
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def dumps(obj: Any, *, nan: str = "string", **kwargs: Any) -> str:
    """``json.dumps`` with non-finite floats written the ``nan`` way (see JSON_NAN_FORMS)."""
    if nan == "raw":
        return json.dumps(obj, allow_nan=True, **kwargs)
    if nan not in JSON_NAN_FORMS:
        raise ValueError(f"unknown JSON NaN form {nan!r} (one of {', '.join(JSON_NAN_FORMS)})")
    try:  # the common case: nothing to replace, no copy
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(_finite(obj, nan), allow_nan=False, **kwargs)


def _finite(obj: Any, nan: str) -> Any:
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return None if nan == "null" else _NON_FINITE[repr(obj)]
        return obj
    if isinstance(obj, Mapping):
        return {k: _finite(v, nan) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, nan) for v in obj]
    return obj


def write_json(out: IO[str], rows: Iterable[tuple[Job, Mapping[str, Any]]], *,
               nan: str = "string") -> int:
    """Write a JSON array of flat objects (one per job), streaming; returns the count.
    Non-finite floats are written the ``nan`` way (see JSON_NAN_FORMS)."""
    n = 0
    out.write("[")
    for job, state in rows:
        out.write(",\n" if n else "\n")
        out.write(dumps(full_state(job, state), nan=nan, ensure_ascii=False))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n


#: The reserved columns a text table keeps (the rest are in CSV and JSON).
TABLE_RESERVED = tuple(r for r in RESERVED if r.name in ("id", "status"))


def write_table(out: IO[str], user_keys: Iterable[str],
                rows: Iterable[tuple[Job, Mapping[str, Any]]], *, width: int = 30) -> int:
    """An aligned text table for people: id, status and one column per parameter or result
    (cells cut to ``width`` characters). Holds all rows in memory: for big exports use CSV."""
    keys = sorted(user_keys)
    columns = [r.key for r in TABLE_RESERVED] + keys
    cells = []
    for job, state in rows:
        flat = full_state(job, state)
        cells.append([_cut(cell(flat.get(c)), width) for c in columns])
    header = [r.name for r in TABLE_RESERVED] + keys  # id, status: without the prefix
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip() + "\n")
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    return len(cells)


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
