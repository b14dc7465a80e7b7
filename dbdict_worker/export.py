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

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out
        self.rows = -1  # the header is not a job
        self._quoted = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        for part in text.split('"'):
            if not self._quoted:
                self.rows += part.count("\n")
            self._quoted = not self._quoted
        self._quoted = not self._quoted  # n parts have n - 1 quotes between them
        return self.out.write(text)


def write_json(out: IO[str], rows: Iterable[tuple[Job, Mapping[str, Any]]]) -> int:
    """Write a JSON array of flat objects (one per job), streaming; returns the count.

    Non-finite floats are written as NaN/Infinity (as Python and JavaScript read them)."""
    n = 0
    out.write("[")
    for job, state in rows:
        out.write(",\n" if n else "\n")
        out.write(json.dumps(full_state(job, state), ensure_ascii=False, allow_nan=True))
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
