"""What may name a directory, and so a job table: the one rule that the enqueue, the database
URL, the worker's options and the paths of job directories (``<db>/<table>/<id>``) share."""
from __future__ import annotations

import unicodedata

from dbdict_worker.errors import UsageError

#: Longest directory name most file systems accept, in bytes.
MAX_SEGMENT_BYTES = 255


def segment_problem(text: str) -> str | None:
    """Why ``text`` cannot be one path component (a directory name), or None if it can."""
    if not text:
        return "it is empty"
    if text in (".", ".."):
        return "'.' and '..' name other directories"
    if "/" in text:
        return "it contains '/'"
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        return "it contains a control character"
    if len(text.encode("utf-8", "replace")) > MAX_SEGMENT_BYTES:
        return f"it is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def safe_segment(text: object) -> str:
    """``text`` as one path component, or UsageError saying why it cannot be one."""
    seg = str(text)
    why = segment_problem(seg)
    if why is not None:
        raise UsageError(f"{seg!r} cannot be used as a directory name: {why}")
    return seg


def check_table_name(name: str) -> str:
    """A job table's name, or UsageError: it becomes a directory (``<db>/<table>/<id>``), so
    it is a safe path component; and ``--table a,b`` lists tables, so it has no comma and no
    space at either end (a list's items are stripped)."""
    why = segment_problem(name)
    if why is None and "," in name:
        why = "it contains ',' (commas separate the tables of a list)"
    if why is None and name != name.strip():
        why = "it starts or ends with a space"
    if why is not None:
        raise UsageError(f"invalid table name {name!r}: {why}; a table name becomes a "
                         f"directory name")
    return name


def table_list(text: str | None) -> list[str] | None:
    """The tables ``--table``/``DBDICT_TABLE`` names: a comma-separated list (``t1,t2``), the
    same for every command that reads or books (empty items, as in ``t1,``, are dropped); each
    name is checked, and an empty list refused. None when ``text`` is None."""
    if text is None:
        return None
    names = [check_table_name(item.strip()) for item in text.split(",") if item.strip()]
    if not names:  # '' or ',': not "every table", which would act on far more than meant
        check_table_name(text)
    return names


def one_table(text: str | None, source: str = "--table") -> str | None:
    """The one table a command that writes into a table takes (``dbdict-enqueue``), or
    UsageError when ``text`` lists several. ``source`` is how the user gave it, for the
    message (``--table`` or ``DBDICT_TABLE``)."""
    names = table_list(text)
    if names is not None and len(names) > 1:
        raise UsageError(f"dbdict-enqueue takes one table; {source}={text} names {len(names)}")
    return names[0] if names is not None else None
