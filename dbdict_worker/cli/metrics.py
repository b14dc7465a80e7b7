"""``dbdict metrics ID... [--key K] [--format table|csv|json]``: the intermediate metrics
jobs reported (``channel.report(step, **metrics)``), as a table by step for one job or as
long-form CSV / JSON for any selection (the export of learning curves)."""
from __future__ import annotations

import csv
import sys
from typing import IO, Any, Sequence

import click

from dbdict_worker import curves
from dbdict_worker.cli.common import (db_options, handle_errors, json_nan_option, open_store,
                                      selection_args)
from dbdict_worker.db.curves import Point
from dbdict_worker.export import cell
from dbdict_worker.export import dumps as json_dumps

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.command("metrics", context_settings=CONTEXT)
@click.argument("ids", nargs=-1, type=int)
@click.option("--key", "-k", "keys", multiple=True, metavar="KEY",
              help="Only this metric (repeatable).")
@click.option("--attempt", "-a", type=click.IntRange(min=1), metavar="N",
              help="Only what this attempt reported (default: every attempt).")
@click.option("--where", "-w", multiple=True, metavar="KEY=VALUE",
              help="Jobs whose parameter KEY equals VALUE (repeatable, ANDed).")
@click.option("--status", "-s", "status", multiple=True, metavar="STATUS",
              help="Jobs with this status (name or number; repeatable).")
@click.option("--all", "select_all", is_flag=True, help="Every job (of --table, if given).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
              help="table: step, then one column per key (one job's default); csv or json: "
                   "one row per job, attempt, step and key (the default for a selection "
                   "of several jobs).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file instead of standard output.")
@json_nan_option
@db_options
@handle_errors
def metrics_command(ids: Sequence[int], keys: Sequence[str], attempt: int | None,
                    where: Sequence[str], status: Sequence[str], select_all: bool,
                    fmt: str | None, as_json: bool, output: str | None, json_nan: str,
                    db: str | None, table: str | None, debug: bool) -> None:
    """Print the metrics the selected jobs reported while they ran.

    One job (`dbdict metrics 42`): a table, one line per step and one column per key; a step
    that several attempts reported (a job resumed after a requeue) shows the latest
    attempt's value. Several jobs, --where, --status or --all: CSV with the columns job_id,
    attempt, step, key, value, at (the database's time of writing), every attempt's rows;
    e.g. `dbdict metrics --table T > curves.csv`. A selection without metrics prints
    a note on stderr and exits 0 (CSV: the header only; JSON: [])."""
    if as_json:
        fmt = "json"
    sel = selection_args(ids, where, status, table, need_one=not select_all)
    one = len(ids) == 1
    fmt = fmt or ("table" if one else "csv")
    with open_store(db, table) as store:
        rows = curves.points(store, sel["ids"], table=sel["tables"], where=sel["where"],
                             statuses=sel["statuses"], keys=list(keys) or None,
                             attempt=attempt)
        if not rows:
            _check_jobs(store, ids)
    out = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        if fmt == "table":
            _write_table(out, rows, several=len({p.job_id for p in rows}) > 1)
        elif fmt == "csv":
            _write_csv(out, rows)
        else:
            out.write(json_dumps([_record(p) for p in rows], nan=json_nan, indent=1) + "\n")
    finally:
        if output:
            out.close()
    if not rows:
        click.echo(_nothing(ids, keys, attempt), err=True)
    elif output:
        click.echo(f"wrote {len(rows)} values to {output}", err=True)


def _check_jobs(store: Any, ids: Sequence[int]) -> None:
    """NotFound (exit 1) for a job id that does not exist: no metrics is not the same."""
    for job_id in ids:
        store.job(job_id)


def _nothing(ids: Sequence[int], keys: Sequence[str], attempt: int | None) -> str:
    who = f"job {ids[0]}" if len(ids) == 1 else "the selected jobs"
    what = "metric " + ", ".join(keys) if keys else "metrics"
    when = f" in attempt {attempt}" if attempt else ""
    return f"{who}: no {what} reported{when} (channel.report)"


def _record(p: Point) -> dict[str, Any]:
    return {"job_id": p.job_id, "attempt": p.attempt, "step": p.step, "key": p.key,
            "value": p.value, "at": p.at.isoformat()}


def _write_csv(out: IO[str], rows: Sequence[Point]) -> None:
    writer = csv.writer(out)
    writer.writerow(curves.COLUMNS)
    for p in rows:
        writer.writerow([p.job_id, p.attempt, p.step, p.key, cell(p.value), p.at.isoformat()])


def _write_table(out: IO[str], rows: Sequence[Point], *, several: bool) -> None:
    """Aligned columns: (job_id,) step, then one per key; the latest attempt per step."""
    if not rows:
        return
    keys = sorted({p.key for p in rows})
    lines = []
    for job_id, by_key in curves.by_step(rows).items():
        steps: dict[int, dict[str, float | None]] = {}
        for key, curve in by_key.items():
            for step, value in curve:
                steps.setdefault(step, {})[key] = value
        for step in sorted(steps):
            lines.append(([str(job_id)] if several else []) + [str(step)]
                         + [cell(steps[step].get(k)) for k in keys])
    head = (["job_id"] if several else []) + ["step"] + keys
    widths = [max(len(head[i]), *(len(line[i]) for line in lines)) for i in range(len(head))]
    for line in [head, *lines]:
        out.write("  ".join(v.rjust(w) for v, w in zip(line, widths)).rstrip() + "\n")
