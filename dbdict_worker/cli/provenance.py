"""Provenance in the commands: ``dbdict-enqueue --no-provenance`` and what it records, and
the provenance block of ``dbdict show``."""
from __future__ import annotations

import json
import shlex
from typing import Any, Callable

import click

from dbdict_worker import provenance
from dbdict_worker.records import PROVENANCE, RUN

_META = "dbdict.no_provenance"


def _remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[_META] = value
    return value


def no_provenance_option(f: Callable) -> Callable:
    """``--no-provenance``, kept in the context (the command's signature does not change)."""
    return click.option(
        "--no-provenance", is_flag=True, expose_value=False, callback=_remember,
        help="Do not record who enqueued, the command line and the git version of the "
             "experiment's code (see dbdict show).")(f)


def enqueue_submission(experiment: str, *, is_command: bool) -> dict[str, Any] | None:
    """The ``submission`` for ``Store.enqueue`` from ``dbdict-enqueue``: this process's
    command line and the code's git facts (None with ``--no-provenance``)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_META):
        return None
    return provenance.submission(experiment, is_command=is_command)


def command_text(command: str | None) -> str | None:
    """A stored command line (a JSON list) as a shell would take it."""
    if not command:
        return None
    try:
        argv = json.loads(command)
        return shlex.join(str(a) for a in argv)
    except (ValueError, TypeError):
        return command


def provenance_lines(values: dict[str, Any]) -> list[str]:
    """The provenance block of ``dbdict show``: the enqueue's facts, then the latest
    attempt's (``values``: a job's reserved keys). Empty when nothing was recorded."""
    lines = []
    for r in PROVENANCE:
        value = values.get(r.key)
        if value is None:
            continue
        if r.name == "command":
            value = command_text(value)
        lines.append(f"  {r.key} = {value}")
    if not lines:
        return []
    head = "provenance (enqueue; latest attempt's python, version, gpus):" \
        if any(r.source == RUN for r in PROVENANCE if values.get(r.key) is not None) \
        else "provenance:"
    return [head, *lines]
