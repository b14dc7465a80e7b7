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
import math
import os
from typing import Any, Iterable, Iterator, Mapping, Sequence

from dbdict_worker import state as statemod
from dbdict_worker.constants import MAX_ENQUEUE_JOBS, Status
from dbdict_worker.errors import UsageError
from dbdict_worker.job.workdir import EXPERIMENT_KEY
from dbdict_worker.sweeps import (brace_choices, count_sweep, iter_sweep_file, read_sweep_file,
                                  read_utf8)


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
    file that does not exist, or the line of one that is not valid UTF-8."""
    out = []
    for path in paths:
        if not os.path.isfile(path):
            raise UsageError(f"no such .conf file: {path}")
        text = read_utf8(path, ".conf file")
        try:
            out.append(statemod.parse_conf(text))
        except UsageError as e:
            raise type(e)(f"{path}: {e}") from None
    return out


def conf_base(paths: Sequence[str], experiment: str) -> tuple[dict[str, Any], list[str]]:
    """The parameters of the .conf files ``paths`` merged in order, for an enqueue of
    ``experiment``, and notes for the user.

    A file read back from a workdir holds reserved keys: ``dbdict.experiment`` (orig.conf) is
    accepted when it names ``experiment`` and refused when it names another; the per-job ones
    (current.conf's ``dbdict.id``, ``dbdict.status``, ...) are ignored, with a note.
    """
    base: dict[str, Any] = {}
    notes = []
    for path, conf in zip(paths, read_confs(paths)):
        named = conf.get(EXPERIMENT_KEY, experiment)
        if named != experiment:
            raise UsageError(f"{path}: {EXPERIMENT_KEY} = {named!r}, but the command line "
                             f"enqueues {experiment!r}: enqueue {named!r} or drop that line")
        ignored = [k for k in conf if statemod.is_reserved(k) and k != EXPERIMENT_KEY]
        if ignored:
            notes.append(f"note: {path}: ignored its per-job keys ({', '.join(ignored)})")
        base.update(statemod.user_keys(conf))
    return base, notes


class Combinations:
    """The parameter combinations of one enqueue, made one at a time: ``base``, then a
    combination of the sweep file, then one of the inline arguments (their ``{{...}}`` sweeps
    expanded) on top; the sweep file's combinations vary slowest. Iterating again starts over
    (a retried transaction reads them again). ``count`` is known without making any.

    The arguments, the sweep file and the keys are checked when it is made (UsageError,
    StateError); a value deep in a sweep file is checked when its combination is made.
    """

    def __init__(self, base: Mapping[str, Any], inline: Sequence[str], *,
                 sweep_file: str | None = None) -> None:
        self.base = dict(base)
        self.sweep_file = sweep_file
        self._factors = read_sweep_file(sweep_file) if sweep_file else None
        choices = brace_choices(inline)
        # Every combination has the same keys (a {{...}} varies values only), so the first
        # one, parsed whole, catches clashes between arguments ('a' and 'a.b') for all.
        statemod.check_user_keys({**self.base, **statemod.parse_params([c[0] for c in choices])})
        self._choices = [[statemod.parse_params([arg]) for arg in c] for c in choices]
        self.count = math.prod(len(c) for c in choices) * (
            count_sweep(self._factors) if self._factors is not None else 1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        files = iter_sweep_file(self.sweep_file, self._factors) \
            if self.sweep_file and self._factors is not None else iter(({},))
        for fc in files:
            for picks in itertools.product(*self._choices):
                st = dict(self.base)
                st.update(fc)
                for one in picks:
                    st.update(one)
                statemod.check_user_keys(st)
                yield st


def combinations(base: Mapping[str, Any], inline: Sequence[str], *,
                 sweep_file: str | None = None, single: str | None = None
                 ) -> list[dict[str, Any]]:
    """Every combination of :class:`Combinations`, as a list. A reserved key raises
    StateError.

    ``single`` names a command that runs one job: an inline sweep is then refused.
    """
    combos = Combinations(base, inline, sweep_file=sweep_file)
    if single is not None and any(len(c) > 1 for c in combos._choices):
        raise UsageError(f"{single} runs one job: {{{{...}}}} sweeps are for dbdict-enqueue")
    return list(combos)


def check_count(jobs: int, *, yes: bool, limit: int = MAX_ENQUEUE_JOBS) -> None:
    """Refuse an enqueue of more than ``limit`` jobs unless ``yes`` (``--yes``): a typo in a
    sweep can ask for 10^9 jobs, which would fill the database for hours."""
    if jobs > limit and not yes:
        raise UsageError(f"this enqueue makes {jobs:,} jobs, more than {limit:,}: check the "
                         "sweep, or pass --yes to enqueue them all")


def parse_where(items: Iterable[str]) -> list[tuple[str, Any]]:
    """``--where key=value`` filters; values are Python literals like parameters."""
    out = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"--where takes key=value, got {item!r}")
        key, _, text = item.partition("=")
        key = statemod.check_key(key.strip())
        if statemod.is_reserved(key):
            raise UsageError(f"--where {key}: filter reserved keys with --status or ids")
        out.append((key, statemod.parse_value(text)))
    return out


def parse_statuses(names: Iterable[str]) -> list[Status]:
    """``--status`` names (any case) or numbers as statuses; a bad one is a UsageError
    naming the choices."""
    out = []
    for name in names:
        try:
            out.append(Status.parse(name))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return out
