"""A :class:`~dbdict_worker.db.models.Selection` as SQL: the WHERE conditions on ``jobs`` that
every command acting on "these jobs" shares (list, counts, export, the view, cancel...)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from dbdict_worker.db import schema
from dbdict_worker.db.models import Selection
from dbdict_worker.db.schema import TXT_PREFIX, jobs, state
from dbdict_worker.state import format_value


def selection_filter(sel: Selection) -> list[sa.ColumnElement[bool]]:
    """The conditions on ``jobs`` (and its state, through EXISTS) that pick the jobs of
    ``sel``; none when it selects every job."""
    cond: list[sa.ColumnElement[bool]] = []
    if sel.table_ids is not None:
        cond.append(jobs.c.table_id.in_(sel.table_ids))
    if sel.ids is not None:
        cond.append(jobs.c.id.in_(sel.ids))
    if sel.statuses is not None:
        cond.append(jobs.c.status.in_([int(s) for s in sel.statuses]))
    for key, value in sel.where:
        # An alias, so that the EXISTS correlates only with jobs even in queries that read
        # the state table themselves.
        st = state.alias("w")
        cond.append(sa.exists().where(st.c.job_id == jobs.c.id, _value_filter(st, key, value)))
    return cond


def _number_texts(value: float | int) -> list[str]:
    """The ``txt`` spellings a number equal to ``value`` can have: the float's repr, and the
    int's digits when the value is integral (so ``lr=1`` finds 1 and 1.0)."""
    as_float = float(value)
    texts = [repr(as_float)]
    if isinstance(value, int):
        texts.append(str(value))
    elif as_float.is_integer():
        texts.append(str(int(as_float)))
    return texts


def _value_filter(st: sa.Table, key: str, value: Any) -> sa.ColumnElement[bool]:
    """Rows of ``st`` (the state table or an alias) whose key is ``key`` and whose value
    equals ``value``: numbers compare as numbers (``lr=1`` matches 1 and 1.0), other types
    exactly. Every test is on ``(key, substr(txt))``, the one value index."""
    prefix = sa.func.substr(st.c.txt, 1, TXT_PREFIX)
    cond = [st.c.key == key]
    if value is None:
        cond.append(st.c.vtype == schema.VTYPE_NONE)
        return sa.and_(*cond)
    if isinstance(value, bool):
        types, texts = [schema.VTYPE_BOOL], ["True" if value else "False"]
    elif isinstance(value, (int, float)):
        types, texts = [schema.VTYPE_INT, schema.VTYPE_FLOAT], _number_texts(value)
    elif isinstance(value, str):
        types, texts = [schema.VTYPE_STR], [value]
    else:
        types = [schema.VTYPE_TUPLE if isinstance(value, tuple) else schema.VTYPE_LIST]
        texts = [format_value(value)]
    cond.append(prefix.in_([t[:TXT_PREFIX] for t in texts]))
    # Only the tests that can change the answer: each redundant one makes the planner guess
    # fewer matches (it multiplies their frequencies), and a guess of 22 jobs where 100,000
    # match makes it read them all before sorting a page instead of walking an index.
    if any(len(t) >= TXT_PREFIX for t in texts):  # shorter: the prefix is the whole text
        cond.append(st.c.txt.in_(texts))
    if types != [schema.VTYPE_STR] or _other_spelling(value):
        cond.append(st.c.vtype.in_(types))
    return sa.and_(*cond)


def _other_spelling(text: str) -> bool:
    """Whether a value of another type (bool, number, list, tuple) can have ``text`` as
    its ``txt``; a string that cannot needs no test of the value type."""
    if text in ("True", "False") or text[:1] in ("[", "("):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True
