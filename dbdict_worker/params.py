"""Parameters from a command line, as ``dbdict-enqueue`` and ``dbdict run`` take them (the
README's "Parameters" section).

An argument is ``key=value`` or ``key::pkg.Builder`` (:func:`dbdict_worker.state.parse_params`),
where ``key={{a,b,c}}`` sweeps over values (:func:`dbdict_worker.sweeps.expand_braces`), or a
``FILE.conf``. ``.conf`` files come first, then each combination of a sweep file, then the
inline arguments on top. Errors are :class:`~dbdict_worker.errors.UsageError` (StateError for a
key or value), which the commands print as one line, with exit status 2.
"""
from __future__ import annotations

import itertools
import os
from typing import Any, Iterable, Mapping, Sequence

from dbdict_worker import state as statemod
from dbdict_worker.errors import UsageError
from dbdict_worker.sweeps import expand_braces, load_sweep_file


def is_param(arg: str) -> bool:
    """True for ``key=value`` and ``key::builder``."""
    return "=" in arg or "::" in arg


def is_conf(arg: str) -> bool:
    """True for a ``FILE.conf`` argument (``base=x.conf`` is a parameter, not a file)."""
    return arg.endswith(".conf") and not is_param(arg)


def split(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the .conf files, the inline parameters), each in the order given."""
    args = list(args)
    return [a for a in args if is_conf(a)], [a for a in args if not is_conf(a)]


def read_confs(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Each .conf file as a flat dict (reserved keys included), in order; UsageError names a
    file that does not exist."""
    out = []
    for path in paths:
        if not os.path.isfile(path):
            raise UsageError(f"no such .conf file: {path}")
        out.append(statemod.read_conf(path))
    return out


def combinations(base: Mapping[str, Any], inline: Sequence[str], *,
                 sweep_file: str | None = None, single: str | None = None
                 ) -> list[dict[str, Any]]:
    """One flat state per parameter combination: ``base``, then a combination of the sweep
    file, then one of the inline arguments (their ``{{...}}`` sweeps expanded) on top; the
    sweep file's combinations vary slowest. A reserved key raises StateError.

    ``single`` names a command that runs one job: an inline sweep is then refused.
    """
    file_combos = load_sweep_file(sweep_file) if sweep_file else [{}]
    arg_lists = expand_braces(inline)
    if single is not None and len(arg_lists) > 1:
        raise UsageError(f"{single} runs one job: {{{{...}}}} sweeps are for dbdict-enqueue")
    line_combos = [statemod.parse_params(args) for args in arg_lists]
    states = []
    for fc, lc in itertools.product(file_combos, line_combos):
        st = dict(base)
        st.update(statemod.flatten(fc))
        st.update(lc)
        statemod.check_user_keys(st)
        states.append(st)
    return states
