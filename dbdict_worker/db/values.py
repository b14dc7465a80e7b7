"""How one state value is stored in the typed ``state`` table, and read back.

A value becomes ``(vtype, num, txt)``: ``num`` is the number used to filter and sort
(bools, ints, floats), ``txt`` the exact text (int digits, float repr with nan/inf, the
string, or the Python literal of a list/tuple). Reading both back gives the value with its type.
"""
from __future__ import annotations

import math
from typing import Any

from dbdict_worker.db.schema import (
    VTYPE_BOOL,
    VTYPE_FLOAT,
    VTYPE_INT,
    VTYPE_LIST,
    VTYPE_NONE,
    VTYPE_STR,
    VTYPE_TUPLE,
)
from dbdict_worker.state import format_value, parse_value

Encoded = tuple[int, "float | None", "str | None"]


def encode(value: Any, *, nan_as_null: bool = False) -> Encoded:
    """``(vtype, num, txt)`` for a checked state value. ``nan_as_null`` for SQLite, whose REAL
    columns cannot hold NaN (the exact value still lives in ``txt``)."""
    kind = type(value)  # checked values have exactly these types: test the common ones first
    if kind is float:
        return VTYPE_FLOAT, (None if nan_as_null and value != value else value), repr(value)
    if kind is int:
        return VTYPE_INT, float(value), str(value)
    if kind is str:
        return VTYPE_STR, None, value
    if value is None:
        return VTYPE_NONE, None, None
    if isinstance(value, bool):
        return VTYPE_BOOL, float(value), "True" if value else "False"
    if isinstance(value, int):
        return VTYPE_INT, float(value), str(value)
    if isinstance(value, float):
        num = None if (nan_as_null and math.isnan(value)) else value
        return VTYPE_FLOAT, num, repr(value)
    if isinstance(value, str):
        return VTYPE_STR, None, value
    if isinstance(value, (list, tuple)):
        # Python's own spelling (nan and inf included) round-trips nested tuples exactly.
        return (VTYPE_TUPLE if isinstance(value, tuple) else VTYPE_LIST), None, \
            format_value(value)
    raise TypeError(f"unchecked value of type {type(value).__name__}")


def decode(vtype: int, num: float | None, txt: str | None) -> Any:
    """The inverse of :func:`encode`."""
    if vtype == VTYPE_NONE:
        return None
    if vtype == VTYPE_BOOL:
        return txt == "True"
    if vtype == VTYPE_INT:
        return int(txt)  # type: ignore[arg-type]
    if vtype == VTYPE_FLOAT:
        return float(txt)  # type: ignore[arg-type]
    if vtype == VTYPE_STR:
        return txt
    if vtype in (VTYPE_LIST, VTYPE_TUPLE):
        return parse_value(txt)  # type: ignore[arg-type]
    raise ValueError(f"unknown value type {vtype}")
