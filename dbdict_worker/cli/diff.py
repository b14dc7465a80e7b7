"""``dbdict diff ID1 ID2``: the parameters, results and provenance in which two jobs differ."""
from __future__ import annotations

import math
from typing import Any, Mapping

import click

from dbdict_worker.cli.common import (db_only_options, handle_errors, json_nan_option,
                                      open_store)
from dbdict_worker.export import dumps as json_dumps
from dbdict_worker.cli.provenance import command_text
from dbdict_worker.db.models import Job
from dbdict_worker.records import PROVENANCE, reserved
from dbdict_worker.state import format_value

#: Reserved keys compared besides the provenance ones (the others, such as ids, times and
#: statuses, differ between any two jobs).
COMPARED = ("dbdict.experiment", "dbdict.table", "dbdict.host")
ABSENT = "(absent)"
_PROVENANCE_KEYS = frozenset(r.key for r in PROVENANCE)
#: Where a job lacks a key (in :func:`differences`).
NO_VALUE = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def compared_keys(job: Job, state: Mapping[str, Any]) -> dict[str, Any]:
    """What ``diff`` compares of a job: its user keys, then its experiment, table and host,
    then the provenance keys that were recorded (a None one is absent)."""
    own = reserved(job)
    out = dict(sorted(state.items()))
    out.update((k, own[k]) for k in COMPARED)
    out.update((r.key, own[r.key]) for r in PROVENANCE if own[r.key] is not None)
    return out


def differences(first: tuple[Job, Mapping[str, Any]],
                second: tuple[Job, Mapping[str, Any]]) -> list[tuple[str, Any, Any]]:
    """``(key, value in first, value in second)`` for each key whose values differ, in the
    order of :func:`compared_keys` (user keys sorted first); a job without the key has
    ``NO_VALUE`` there."""
    a, b = compared_keys(*first), compared_keys(*second)
    keys = list(a) + [k for k in b if k not in a]
    user = sorted(k for k in keys if not k.startswith("dbdict."))
    keys = user + [k for k in keys if k.startswith("dbdict.")]
    out = []
    for k in keys:
        va, vb = a.get(k, NO_VALUE), b.get(k, NO_VALUE)
        if not _same(va, vb):
            out.append((k, va, vb))
    return out


def _text(key: str, value: Any) -> str:
    """A value as ``diff`` prints it: parameters as in .conf files ('a' for a string),
    provenance as ``dbdict show`` prints it (plain text, the command shell-quoted)."""
    if value is NO_VALUE:
        return ABSENT
    if key == "dbdict.command":
        return command_text(value) or ""
    if key in _PROVENANCE_KEYS:
        return str(value)
    return format_value(value)


@click.command("diff", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("first", type=int)
@click.argument("second", type=int)
@click.option("--json", "as_json", is_flag=True,
              help='{"ids": [ID1, ID2], "differences": [{"key": K, "values": [V1, V2], '
                   '"present": [bool, bool]}, ...]}.')
@json_nan_option
@db_only_options
@handle_errors
def diff_command(first: int, second: int, as_json: bool, json_nan: str, db: str | None,
                 debug: bool) -> None:
    """Show the parameters, results and provenance in which jobs FIRST and SECOND differ:
    one line per key (key, value in FIRST, value in SECOND; "(absent)" where a job lacks
    it). The experiment, table and host are compared too; ids, statuses and times are not.
    Exit 0 whether or not they differ."""
    with open_store(db, None) as store:
        one, two = store.job(first), store.job(second)
    found = differences(one, two)
    if as_json:
        click.echo(json_dumps({"ids": [first, second], "differences": [
            {"key": k, "values": [None if v is NO_VALUE else v for v in (va, vb)],
             "present": [va is not NO_VALUE, vb is not NO_VALUE]} for k, va, vb in found]},
            nan=json_nan, indent=1, ensure_ascii=False))
        return
    if not found:
        click.echo(f"jobs {first} and {second} have the same parameters, results and "
                   "provenance")
        return
    rows = [("key", f"job {first}", f"job {second}")] + \
        [(k, _text(k, va), _text(k, vb)) for k, va, vb in found]
    w0 = max(len(r[0]) for r in rows)
    w1 = min(40, max(len(r[1]) for r in rows))
    for k, va, vb in rows:
        click.echo(f"{k:<{w0}}  {va:<{w1}}  {vb}".rstrip())
