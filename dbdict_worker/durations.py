"""Durations on the command line: ``90``, ``90s``, ``1.5m``, ``15m``, ``6h``, ``1d``, ``1h30m``.

:func:`parse_duration` reads one (seconds, as a float) and :func:`format_duration` writes one
back in the shortest exact unit. Used by ``dbdict-enqueue --timeout/--stall-after/--retry-delay``
and ``dbdict-worker start --walltime``.
"""
from __future__ import annotations

import math
import os
import re

#: Seconds per unit; a number without a unit is seconds.
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"{_NUMBER}|(?:{_NUMBER}\s*[smhd]\s*)+")
_PART = re.compile(rf"({_NUMBER})\s*([smhd]?)")


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``: a number >= 0 with an optional unit s, m, h or d (``"90"``,
    ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"``, ``"0.2s"``), or several with units
    (``"1h30m"``); ValueError with a one-line message otherwise. A number (int or float) is
    taken as seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spelled = str(text).strip().lower()
        if _DURATION.fullmatch(spelled) is None:
            raise ValueError(f"{text!r} is not a duration: expected a number of seconds or a "
                             f"number with a unit s, m, h or d, such as 90, 90s, 15m, 6h, 1d")
        seconds = sum(float(n) * UNITS[unit or "s"] for n, unit in _PART.findall(spelled))
    if not (0 <= seconds < math.inf):
        raise ValueError(f"{text!r} is not a duration: expected a finite number >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` as :func:`parse_duration` reads it: in the largest unit that divides it
    exactly (21600 -> ``"6h"``, 900 -> ``"15m"``, 5400 -> ``"90m"``, 90 -> ``"90s"``, 0.2 ->
    ``"0.2s"``); otherwise to 3 digits under a minute (``"59.5s"``) and to the second above
    (``"1h59m59s"``)."""
    for unit in ("d", "h", "m"):
        size = UNITS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    if float(seconds).is_integer() or seconds < 60:
        return f"{seconds:.3g}s" if seconds < 60 else f"{int(seconds)}s"
    whole = round(seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, whole = divmod(whole, int(UNITS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


__all__ = ["parse_duration", "format_duration", "UNITS"]


def seconds_from_env(name: str, default: float) -> float:
    """The environment variable ``name`` as seconds (>= 0), or ``default`` when it is unset
    or malformed (a tuning knob read where there is no one to tell: a job, a worker)."""
    text = os.environ.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value >= 0 else default
