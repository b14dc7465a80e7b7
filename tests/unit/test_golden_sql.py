"""The queue core's SQL, word for word: the booking and finishing statements of each dialect,
compiled from :mod:`dbdict_worker.db.queue` and compared with the files in ``tests/golden/``.

A change to those statements shows up as a diff of the files, for its author and its
reviewer. When the change is meant, rewrite the files and review their diff:

    DBDICT_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_golden_sql.py
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from dbdict_worker.db import queue

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = "DBDICT_UPDATE_GOLDEN"

#: The drivers' dialects. SQLite's is compiled with named parameters so that the file shows
#: their names; pysqlite receives ``?`` in the same order.
DIALECTS = {
    "postgresql": postgresql.psycopg2.dialect(),
    "sqlite": sqlite.pysqlite.dialect(paramstyle="named"),
}

#: {file: (what it holds, [(case, the statements for a dialect, in the order they are sent)])}
CASES: dict[str, tuple[str, list[tuple[str, Callable[[str], tuple]]]]] = {
    "booking": (
        "Booking: queue.booking_statements(dialect, with_tables), sent by queue.book.\n"
        "__[POSTCOMPILE_table_ids] is sent as one parameter per table id; a worker that\n"
        "books from any table sends the same without that condition.",
        [("Tables given (a worker started with --table):",
          lambda d: queue.booking_statements(d, True))]),
    "finishing": (
        "Releasing a booked job: queue.release_statements(dialect, requeue, with_workdir),\n"
        "sent by queue.release_owned. The owner's condition comes from queue.owned.",
        [("Finish: a final status (DONE, ERR_RUN...), with the job's workdir:",
          lambda d: queue.release_statements(d, False, True)),
         ("Requeue: back to START at a priority, with the job's workdir:",
          lambda d: queue.release_statements(d, True, True)),
         ("Finish many (queue.finish_owned_many: one statement for a batch on PostgreSQL,\n"
          "-- the release above once per job on SQLite):",
          queue.finish_many_statements),
         ("Finish many and book (queue.finish_and_book, PostgreSQL; on SQLite the two above):",
          lambda d: (queue.finish_and_book_statement(True),) if d == "postgresql" else ())]),
}


def render(what: str, dialect: str) -> str:
    """The golden file's text: a header, then each case's statements, compiled for
    ``dialect`` with their bind parameters by name (no literal values)."""
    about, cases = CASES[what]
    lines = [f"-- {line}" for line in about.splitlines()] + [
        f"-- Compiled for {dialect}, parameters by name, by tests/unit/test_golden_sql.py;",
        f"-- {UPDATE}=1 rewrites this file.",
    ]
    for case, statements in cases:
        lines += ["", f"-- {case}"]
        for stmt in statements(dialect):
            compiled = str(stmt.compile(dialect=DIALECTS[dialect])).strip()
            lines.append("\n".join(line.rstrip() for line in compiled.splitlines()) + ";")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
@pytest.mark.parametrize("what", sorted(CASES))
def test_the_queue_sql_is_the_golden_sql(what: str, dialect: str):
    path = GOLDEN / f"{what}.{dialect}.sql"
    text = render(what, dialect)
    if os.environ.get(UPDATE) == "1":
        path.write_text(text)
        return
    old = path.read_text() if path.exists() else ""
    if old != text:
        diff = "".join(difflib.unified_diff(
            old.splitlines(keepends=True), text.splitlines(keepends=True),
            f"{path.name} (golden)", f"{path.name} (compiled now)"))
        pytest.fail(
            f"the {what} SQL for {dialect} is not tests/golden/{path.name} any more. If the "
            f"change is meant, rewrite the golden files with\n"
            f"    {UPDATE}=1 python -m pytest tests/unit/test_golden_sql.py\n"
            f"and review their diff.\n{diff}", pytrace=False)
