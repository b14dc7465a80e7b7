"""Parameter sweeps (the README's "Parameters" section): execo_engine's ``sweep``/``geom``/
``igeom``, sweep files (TOML or JSON) and ``key={{a,b,c}}`` command-line expansion.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dbdict_worker import state
from dbdict_worker.errors import UsageError

__all__ = ["sweep", "iter_sweep", "count_sweep", "geom", "igeom", "load_sweep_file",
           "read_sweep_file", "iter_sweep_file", "expand_braces", "brace_choices"]


def sweep(parameters: Mapping[Any, Any]) -> list[dict[Any, Any]]:
    """All combinations of the factors' levels (a full factorial design, as execo's sweep).

    A list (or tuple, range) value gives the levels of a factor; a dict value's keys are the
    levels and each maps to a dict of sub-factors swept only with that level. Any other value
    is a single level. An empty list or dict leaves the factor out. The first factor varies
    slowest.
    """
    return list(iter_sweep(parameters))


def iter_sweep(parameters: Mapping[Any, Any]) -> Iterator[dict[Any, Any]]:
    """The combinations of :func:`sweep`, in the same order, one at a time (a sweep of 10^9
    combinations is never held in memory)."""
    factors = [(factor, options) for factor, value in parameters.items()
               if (options := _options(factor, value))]

    def combine(i: int, acc: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
        if i == len(factors):
            yield acc
            return
        factor, options = factors[i]
        for level, sub in options:
            for subcombo in (iter_sweep(sub) if sub is not None else ({},)):
                yield from combine(i + 1, {**acc, factor: level, **subcombo})

    return combine(0, {})


def count_sweep(parameters: Mapping[Any, Any]) -> int:
    """How many combinations :func:`sweep` gives, without making them."""
    n = 1
    for factor, value in parameters.items():
        options = _options(factor, value)
        if options:
            n *= sum(count_sweep(sub) if sub is not None else 1 for _, sub in options)
    return n


def _options(factor: Any, value: Any) -> list[tuple[Any, Mapping[Any, Any] | None]]:
    """(level, that level's table of sub-factors or None) for one factor."""
    if isinstance(value, Mapping):
        options = []
        for level, sub in value.items():
            if not isinstance(sub, Mapping):
                hint = ""
                if isinstance(sub, (list, tuple)):
                    hint = f" (to sweep a dotted key, quote it: \"{factor}.{level}\" = [...])"
                raise UsageError(f"sweep factor {factor!r}: level {level!r} must map to a table "
                                 f"of sub-factors ({{}} for none), not {type(sub).__name__}{hint}")
            options.append((level, sub))
        return options
    if isinstance(value, (list, tuple, range)):
        return [(level, None) for level in value]
    return [(value, None)]


def geom(range_min: float, range_max: float, num_steps: int) -> list[float]:
    """A geometric progression of ``num_steps`` floats from range_min to range_max inclusive."""
    steps = _steps(num_steps)
    if steps == 0:
        return []
    if steps == 1:
        return [float(range_min)]
    lo, hi = float(range_min), float(range_max)
    if lo == 0 or hi == 0 or (lo < 0) != (hi < 0):
        raise ValueError(f"geom({range_min!r}, {range_max!r}, {num_steps!r}): the bounds must be "
                         "non-zero and of the same sign")
    ratio = math.pow(hi / lo, 1.0 / (steps - 1))
    # The ends are exact, not lo * ratio**n, so that they carry no rounding error (as execo).
    return [lo] + [lo * math.pow(ratio, i) for i in range(1, steps - 1)] + [hi]


def igeom(range_min: float, range_max: float, num_steps: int) -> list[int]:
    """Sorted distinct ints of the rounded geometric progression (may be shorter than num_steps)."""
    steps = _steps(num_steps)
    if steps == 0:
        return []
    if steps == 1:
        return [int(range_min)]
    rounded = {int(round(x)) for x in geom(range_min, range_max, steps)}
    return sorted(rounded | {int(range_min), int(range_max)})


def _steps(num_steps: int) -> int:
    steps = int(num_steps)
    if steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps!r}")
    return steps


# --- sweep files ------------------------------------------------------------------------------

def load_sweep_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a TOML or JSON sweep file and return its combinations as flat checked dicts.

    The format follows the suffix (``.toml``, ``.json``), else JSON is tried, then TOML. Level
    keys of a table-valued factor are parsed with parse_value ("1" is 1, "adam" stays a string),
    since TOML and JSON keys are always strings. Dotted parameter names are quoted keys. A
    factor with no levels (``lr = []``) is refused rather than silently left out.
    """
    return list(iter_sweep_file(path, read_sweep_file(path)))


def read_sweep_file(path: str | os.PathLike) -> dict[Any, Any]:
    """The factors of a sweep file, checked (UsageError names the file): level keys parsed,
    every level a table where one is needed, no empty factor. Its combinations are
    :func:`iter_sweep_file`, and :func:`count_sweep` counts them."""
    text = read_utf8(path, "sweep file")
    data = _parse_sweep_text(Path(path), text)
    where = f"sweep file {os.fspath(path)!r}"
    if not isinstance(data, dict):
        raise UsageError(f"{where}: the top level must be a table of factors, "
                         f"not {type(data).__name__}")
    try:
        factors = _parse_level_keys(data)
        _refuse_empty_factors(factors, "")
        _check_levels(factors, "")
        count_sweep(factors)  # checks every level, nested ones included
    except UsageError as e:  # StateError included: the key is named, add the file
        raise type(e)(f"{where}: {e}") from None
    return factors


def iter_sweep_file(path: str | os.PathLike,
                    factors: Mapping[Any, Any]) -> Iterator[dict[str, Any]]:
    """The combinations of a sweep file's ``factors`` as flat checked dicts, one at a time."""
    try:
        for combo in iter_sweep(factors):
            yield state.flatten(combo)
    except UsageError as e:
        raise type(e)(f"sweep file {os.fspath(path)!r}: {e}") from None


def _refuse_empty_factors(factors: Mapping[Any, Any], prefix: str) -> None:
    # sweep() leaves an empty factor out (execo's rule), which in a file is almost always a
    # mistake that would silently drop the parameter from every job.
    for factor, value in factors.items():
        name = f"{prefix}{factor}"
        if isinstance(value, (list, tuple, Mapping)) and len(value) == 0:
            empty = "[]" if isinstance(value, (list, tuple)) else "{}"
            raise UsageError(f"factor {name!r} = {empty} has no levels: give it at least one "
                             "value, or remove it")
        if isinstance(value, Mapping):
            for level, sub in value.items():
                if isinstance(sub, Mapping):
                    _refuse_empty_factors(sub, f"{name}.{level}.")


def _check_levels(factors: Mapping[Any, Any], prefix: str) -> None:
    # Every value a job can get is a level of some factor: checking the levels here refuses
    # an unstorable one before anything is enqueued, however late its combination comes.
    for factor, value in factors.items():
        name = f"{prefix}{factor}"
        for level, sub in _options(factor, value):
            if sub is not None:
                _check_levels(sub, f"{name}.{level}.")
            elif not isinstance(level, Mapping):  # a table level becomes nested keys
                state.check_value(name, level)


def read_utf8(path: str | os.PathLike, what: str) -> str:
    """A user's text file, or UsageError: missing or unreadable, or ``FILE:LINE: not valid
    UTF-8`` (the line of the first bad byte)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {what} {os.fspath(path)!r}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UsageError(f"{os.fspath(path)}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); "
                         f"save the {what} as UTF-8") from None


def _parse_sweep_text(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return _parse_as(path, text, "TOML")
    if suffix == ".json":
        return _parse_as(path, text, "JSON")
    try:
        return _parse_as(path, text, "JSON")
    except UsageError as json_error:
        try:
            return _parse_as(path, text, "TOML")
        except UsageError as toml_error:
            raise UsageError(f"{json_error}; {toml_error}") from None


def _parse_as(path: Path, text: str, fmt: str) -> Any:
    if fmt == "JSON":
        loads, error = json.loads, json.JSONDecodeError
    else:
        toml = _toml_module()
        loads, error = toml.loads, toml.TOMLDecodeError
    try:
        return loads(text)
    except error as e:
        message = " ".join(str(e).split())
        raise UsageError(f"cannot parse sweep file {str(path)!r} as {fmt}: {message}") from None


def _toml_module() -> Any:
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:
        try:
            import tomli as tomllib  # the same API, for Python 3.10
        except ModuleNotFoundError:
            raise UsageError("reading TOML on Python 3.10 needs the 'tomli' package "
                             "(pip install tomli)") from None
    return tomllib


def _parse_level_keys(params: Mapping[str, Any]) -> dict[Any, Any]:
    """Parse the level keys of every table-valued factor, recursively."""
    out: dict[Any, Any] = {}
    for factor, value in params.items():
        if isinstance(value, Mapping):
            levels: dict[Any, Any] = {}
            for text, sub in value.items():
                level = _hashable(state.parse_value(text))
                if level in levels:
                    # "1" and "1.0" (or "true") would silently merge into one dict key.
                    first = next(k for k in value if _hashable(state.parse_value(k)) == level)
                    raise UsageError(f"factor {factor!r}: levels {first!r} and {text!r} "
                                     "are the same value")
                levels[level] = _parse_level_keys(sub) if isinstance(sub, Mapping) else sub
            value = levels
        out[factor] = value
    return out


def _hashable(value: Any) -> Any:
    # A level key written "[1, 2]" parses to a list, which cannot be a dict key: use tuples.
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


# --- command-line braces ----------------------------------------------------------------------

def expand_braces(args: Sequence[str]) -> list[list[str]]:
    """Expand ``key={{a,b,c}}`` arguments into one argument list per combination.

    Items are split at top-level commas (brackets and quotes respected) and stripped. Several
    braced arguments give their cartesian product, the first varying slowest; other arguments
    appear unchanged, in place, in every list.
    """
    return [list(combo) for combo in itertools.product(*brace_choices(args))]


def brace_choices(args: Sequence[str]) -> list[list[str]]:
    """For each argument, the arguments its ``{{...}}`` stands for (itself if it has none):
    their cartesian product is :func:`expand_braces`, and the product of their lengths is
    how many combinations that makes."""
    return [_brace_choices(arg) for arg in args]


def _brace_choices(arg: str) -> list[str]:
    key, sep, value = arg.partition("=")
    value = value.strip()
    opens, closes = value.startswith("{{"), value.endswith("}}")
    if not sep or not (opens or closes):
        return [arg]
    if not (opens and closes) or len(value) < 4:
        raise UsageError(f"unbalanced braces in {arg!r}: write key={{{{a,b,c}}}}")
    items = _split_top_level(value[2:-2], arg)
    if items == [""]:
        raise UsageError(f"empty {{{{}}}} in {arg!r}: give at least one value")
    if "" in items:
        raise UsageError(f"empty value in {arg!r} (a stray comma?)")
    return [f"{key.strip()}={item}" for item in items]


_CLOSING = {")": "(", "]": "[", "}": "{"}


def _split_top_level(text: str, arg: str) -> list[str]:
    """Split at commas outside brackets and quotes; raise UsageError if unbalanced."""
    items, stack, start = [], [], 0
    for i, ch in state.unquoted(text):
        if i == len(text):  # a quote left open
            raise UsageError(f"unbalanced {ch!r} in {arg!r}")
        if ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != _CLOSING[ch]:
                raise UsageError(f"unbalanced {ch!r} in {arg!r}")
        elif ch == "," and not stack:
            items.append(text[start:i].strip())
            start = i + 1
    if stack:
        raise UsageError(f"unbalanced {stack[-1]!r} in {arg!r}")
    items.append(text[start:].strip())
    return items
