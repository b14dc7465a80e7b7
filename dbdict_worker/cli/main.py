"""``dbdict``: inspect and manage the queue (list, show, status, cancel, requeue, delete,
set-priority, view, export) and the schema (``dbdict db upgrade``)."""
from __future__ import annotations

import contextlib
import itertools
import json
import sys
from typing import Any, Callable, Iterable

import click

from dbdict_worker.cli.common import (check_job_table, db_only_options, db_options,
                                      handle_errors, json_nan_option, open_store,
                                      selection_args)
from dbdict_worker.export import dumps as json_dumps
from dbdict_worker.cli.logs import logs_command, stderr_excerpt
from dbdict_worker.cli.metrics import metrics_command
from dbdict_worker.cli.policy import policy_lines, policy_record
from dbdict_worker.cli.diff import diff_command
from dbdict_worker.cli.provenance import provenance_lines
from dbdict_worker.cli.wait import wait_command
from dbdict_worker.cli.run import help_command, run_command
from dbdict_worker.cli.serve import report_command, serve_command
from dbdict_worker.cli.search import search_command
from dbdict_worker.constants import Status
from dbdict_worker.records import job_record, reserved
from dbdict_worker.state import format_value

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
def main() -> None:
    """Inspect and manage dbdict jobs. Every command takes --db URL (or DBDICT_DB); the
    ones that select jobs also take --table NAME[,NAME...] (or DBDICT_TABLE); see
    COMMAND --help."""


# ---------------------------------------------------------------------------------------------
# Selection options shared by list/status/export and the commands that change jobs


def select_options(f: Callable) -> Callable:
    f = click.option("--status", "-s", "status", multiple=True, metavar="STATUS",
                     help="Only jobs with this status (name or number; repeatable).")(f)
    f = click.option("--where", "-w", multiple=True, metavar="KEY=VALUE",
                     help="Only jobs whose parameter KEY equals VALUE (repeatable, ANDed).")(f)
    return f


def change_options(f: Callable) -> Callable:
    f = select_options(f)
    f = click.option("--all", "select_all", is_flag=True,
                     help="Act on every job of the table (or of all tables).")(f)
    f = click.argument("ids", nargs=-1, type=int)(f)
    return f


def _fmt_params(state: dict[str, Any], width: int = 60) -> str:
    text = " ".join(f"{k}={format_value(v)}" for k, v in sorted(state.items()))
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------
# db


@main.group(context_settings=CONTEXT)
def db() -> None:
    """The database schema."""


@db.command("upgrade", context_settings=CONTEXT)
@db_only_options
@handle_errors
def db_upgrade(db: str | None, debug: bool) -> None:
    """Create the schema, or migrate it to this version's. Safe to run again."""
    with open_store(db, None, check_schema=False) as store:
        before, after = store.upgrade()
    if before == after:
        click.echo(f"schema of {store.where} is up to date (revision {after})")
    else:
        click.echo(f"schema of {store.where} upgraded from {before or 'nothing'} to {after}")


# ---------------------------------------------------------------------------------------------
# Reading


@main.command("list", context_settings=CONTEXT)
@select_options
@click.option("--limit", type=click.IntRange(min=1), help="At most N jobs.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of job objects.")
@json_nan_option
@db_options
@handle_errors
def list_(where: tuple[str, ...], status: tuple[str, ...], limit: int | None, as_json: bool,
          json_nan: str, db: str | None, table: str | None, debug: bool) -> None:
    """List jobs, by id."""
    sel = selection_args((), where, status, table, need_one=False)
    with open_store(db, table) as store:
        if limit is not None and limit <= _LIST_PAGE:
            rows: Iterable[tuple[Any, dict[str, Any]]] = store.jobs_with_state(limit=limit,
                                                                               **sel)
            streamed = None
        else:  # streamed page by page: a million jobs are never all in memory
            streamed = store.iter_jobs_with_state(**sel)
            rows = itertools.islice(streamed, limit)
        with contextlib.closing(streamed) if streamed else contextlib.nullcontext():
            if as_json:
                _echo_json_array((job_record(j, s) for j, s in rows), json_nan)
                return
            click.echo(f"{'id':>7} {'table':<12} {'status':<9} {'prio':>5} {'att':>3}  "
                       "parameters")
            _echo_lines(f"{j.id:>7} {j.table[:12]:<12} {j.status.name:<9} "
                        f"{j.priority:>5g} {j.attempts:>3}  {_fmt_params(s)}\n"
                        for j, s in rows)


#: Up to this --limit, list reads its jobs in one transaction; beyond, or without one, it
#: streams them (Store.iter_jobs_with_state).
_LIST_PAGE = 2000


def _echo_json_array(records: Iterable[dict[str, Any]], json_nan: str) -> None:
    """Write ``records`` as ``json_dumps(list(records), indent=1)`` writes them, followed by
    a newline, but one record at a time: the same bytes without holding them all."""
    n = 0

    def parts() -> Iterable[str]:
        nonlocal n
        for rec in records:
            # A record inside an array with indent=1 is the record's own dumps with every
            # line indented one more space (JSON strings never hold a raw newline).
            text = json_dumps(rec, nan=json_nan, indent=1, ensure_ascii=False)
            yield ("[\n " if n == 0 else ",\n ") + text.replace("\n", "\n ")
            n += 1
        yield "\n]\n" if n else "[]\n"

    _echo_lines(parts())


def _echo_lines(texts: Iterable[str], size: int = 1 << 16) -> None:
    """click.echo the concatenation of ``texts`` in pieces of about ``size`` characters
    (click.echo flushes on each call: one call per job would be a write per job)."""
    buf: list[str] = []
    held = 0
    for text in texts:
        buf.append(text)
        held += len(text)
        if held >= size:
            click.echo("".join(buf), nl=False)
            buf, held = [], 0
    if buf:
        click.echo("".join(buf), nl=False)


@main.command(context_settings=CONTEXT)
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@json_nan_option
@db_options
@handle_errors
def show(job_id: int, as_json: bool, json_nan: str, db: str | None, table: str | None,
         debug: bool) -> None:
    """Show one job: its fields, its whole state and its history."""
    with open_store(db, table) as store:
        job, state = store.job(job_id)
        check_job_table(job, store.table)
        history = store.events(job_id)
        excerpt = stderr_excerpt(store, job)  # a failed job's traceback, from its logs
    if as_json:
        rec = job_record(job, state)
        rec.update(restarts=job.restarts, max_restarts=job.max_restarts,
                   not_before=job.not_before.isoformat() if job.not_before else None,
                   **policy_record(job))
        rec["events"] = [{"at": e.at.isoformat() if e.at else None, "kind": e.kind,
                          "worker": e.worker_id, "detail": e.detail} for e in history]
        click.echo(json_dumps(rec, nan=json_nan, indent=1, ensure_ascii=False))
        return
    for key, value in sorted(state.items()):
        click.echo(f"{key} = {format_value(value)}")
    for key, value in reserved(job, provenance=False).items():
        click.echo(f"{key} = {format_value(value)}")
    for line in provenance_lines(reserved(job)):
        click.echo(line)
    if job.restarts:
        click.echo(f"restarts: {job.restarts} INCOMPLETE in a row without new progress "
                   f"(at most {job.max_restarts})")
    for line in policy_lines(job):  # retries used, time limits
        click.echo(line)
    if job.not_before is not None and job.status == Status.START:
        click.echo(f"not before: {job.not_before.strftime('%Y-%m-%d %H:%M:%S')} UTC")
    if history:
        click.echo("history:")
        for e in history:
            at = e.at.strftime("%Y-%m-%d %H:%M:%S") if e.at else "?"
            click.echo(f"  {at}  {e.kind:<9} {e.worker_id or '':<24} {e.detail or ''}")
    for line in excerpt:
        click.echo(line)


@main.command(context_settings=CONTEXT)
@select_options
@click.option("--by", "by_key", metavar="KEY", help="Count per value of parameter KEY too.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable counts (with "
              "--watch: one JSON overview per line).")
@click.option("--watch", is_flag=True, help="Redraw counts, progress, rates, ETA and workers "
              "until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="With --watch: seconds between frames (default 2).")
@db_options
@handle_errors
def status(where: tuple[str, ...], status: tuple[str, ...], by_key: str | None,
           as_json: bool, watch: bool, interval: float | None, db: str | None,
           table: str | None, debug: bool) -> None:
    """Count jobs per status (per table, or per value of a parameter with --by); --watch
    redraws an overview every few seconds (for an ssh session)."""
    from dbdict_worker.cli import watch as watchmod

    watchmod.check_options(by_key=by_key, where=where, status=status, interval=interval,
                           watch=watch)
    sel = selection_args((), where, status, table, need_one=False)
    if watch:
        with open_store(db, table) as store:
            watchmod.watch(store, tables=sel["tables"], as_json=as_json,
                           interval=interval or watchmod.DEFAULT_INTERVAL)
        return
    names = [s.name for s in Status]
    with open_store(db, table) as store:
        if by_key:
            from dbdict_worker.db.models import MISSING

            rows: dict[str, dict[str, int]] = {}
            for value, st, n in store.counts_by(by_key, **sel):
                label = "(missing)" if value is MISSING else format_value(value)
                rows.setdefault(label, {})[st.name] = n
            header = by_key
        else:
            rows = {}
            for (tbl, st), n in store.counts(**sel).items():
                rows.setdefault(tbl, {})[st.name] = n
            header = "table"
    if as_json:
        click.echo(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    used = [n for n in names if any(n in r for r in rows.values())] or ["START"]
    click.echo(f"{header:<20} " + " ".join(f"{n:>9}" for n in used) + f" {'total':>9}")
    for label in sorted(rows):
        counts = rows[label]
        click.echo(f"{label[:20]:<20} " + " ".join(f"{counts.get(n, 0):>9}" for n in used)
                   + f" {sum(counts.values()):>9}")


# ---------------------------------------------------------------------------------------------
# Changing jobs


def _change(verb: str, ids, where, status, select_all, db, table, act) -> None:
    sel = selection_args(ids, where, status, table, need_one=not select_all)
    with open_store(db, table) as store:
        changed = act(store, sel)
    click.echo(f"{verb} {len(changed)} job(s)" + (f": {_ids(changed)}" if changed else ""))


def _ids(ids: list[int], most: int = 20) -> str:
    text = " ".join(map(str, ids[:most]))
    return text + (f" … (+{len(ids) - most})" if len(ids) > most else "")


@main.command(context_settings=CONTEXT)
@change_options
@db_options
@handle_errors
def cancel(ids, where, status, select_all, db, table, debug) -> None:
    """Cancel queued or running jobs (a worker stops a running one when it notices)."""
    _change("canceled", ids, where, status, select_all, db, table,
            lambda store, sel: store.cancel(**sel))


@main.command(context_settings=CONTEXT)
@change_options
@click.option("--stale", is_flag=True,
              help="Instead: requeue RUNNING jobs whose heartbeat is older than --lease.")
@click.option("--lease", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds without heartbeat after which a RUNNING job is stale.")
@click.option("--priority", "-p", type=float, help="Also set this priority.")
@db_options
@handle_errors
def requeue(ids, where, status, select_all, stale, lease, priority, db, table, debug) -> None:
    """Put finished, pruned, failed or cancelled jobs back in the queue (status START)."""
    if stale:
        with open_store(db, table) as store:
            rescued = store.requeue_stale(lease, by_worker="dbdict requeue --stale")
        back = [r.job_id for r in rescued if r.status == Status.START]
        failed = [r.job_id for r in rescued if r.status != Status.START]
        click.echo(f"requeued {len(back)} stale job(s)" + (f": {_ids(back)}" if back else ""))
        if failed:
            click.echo(f"{len(failed)} job(s) lost too often are now ERR_RUN: {_ids(failed)}")
        return
    _change("requeued", ids, where, status, select_all, db, table,
            lambda store, sel: store.requeue(priority=priority, **sel))


@main.command(context_settings=CONTEXT)
@change_options
@db_options
@handle_errors
def delete(ids, where, status, select_all, db, table, debug) -> None:
    """Delete jobs with their state and history."""
    _change("deleted", ids, where, status, select_all, db, table,
            lambda store, sel: store.delete(**sel))


@main.command("set-priority", context_settings=CONTEXT)
@click.argument("priority", type=float)
@change_options
@db_options
@handle_errors
def set_priority(priority, ids, where, status, select_all, db, table, debug) -> None:
    """Set the PRIORITY of jobs (higher runs first)."""
    _change(f"set priority {priority:g} on", ids, where, status, select_all, db, table,
            lambda store, sel: store.set_priority(priority, **sel))


# ---------------------------------------------------------------------------------------------
# Results


@main.group(context_settings=CONTEXT)
def view() -> None:
    """Flat SQL views of the jobs (one typed column per key)."""


@view.command("create", context_settings=CONTEXT)
@click.argument("name")
@db_options
@handle_errors
def view_create(name: str, db: str | None, table: str | None, debug: bool) -> None:
    """Create (or replace) the SQL view NAME: one row per job of --table (or of all tables),
    one column per key, named like the key ("lr", "model.n_hidden", "dbdict.status").
    The columns are those of the keys present now: create it again after new keys appear."""
    with open_store(db, table) as store:
        columns = store.create_view(name)
    click.echo(f"created view {name!r} with {len(columns)} columns: " + ", ".join(columns))


@view.command("drop", context_settings=CONTEXT)
@click.argument("name")
@db_only_options
@handle_errors
def view_drop(name: str, db: str | None, debug: bool) -> None:
    """Drop the SQL view NAME."""
    with open_store(db, None) as store:
        store.drop_view(name)
    click.echo(f"dropped view {name!r}")


@main.command(context_settings=CONTEXT)
@select_options
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "table", "parquet"]),
              default="csv", show_default=True,
              help="table: aligned text for people (id, status and the parameters and "
                   "results); parquet: a typed file for pandas and others (needs -o FILE "
                   "and pyarrow).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file instead of standard output.")
@json_nan_option
@db_options
@handle_errors
def export(where, status, fmt, output, json_nan, db, table, debug) -> None:
    """Export jobs as CSV (one row per job, one column per key), as a JSON array of flat
    objects (reserved dbdict.* columns first in both), as a text table, or as a parquet
    file with the SQL view's column types."""
    sel = selection_args((), where, status, table, need_one=False)
    if fmt == "parquet":
        from dbdict_worker import frames
        from dbdict_worker.errors import UsageError

        if not output or output == "-":  # binary: never onto a terminal or into a pipe
            raise UsageError("--format parquet writes a binary file: give it with -o FILE")
        with open_store(db, table) as store:
            n = frames.write_parquet(store, output, **sel)
        click.echo(f"wrote {n} jobs to {output}", err=True)
        return
    with open_store(db, table) as store:
        out = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout
        try:
            n = store.export(out, fmt=fmt, json_nan=json_nan, **sel)
        finally:
            if output:
                out.close()
    if output:
        click.echo(f"wrote {n} jobs to {output}", err=True)


main.add_command(run_command, "run")
main.add_command(help_command, "help")
main.add_command(select_options(wait_command), "wait")  # --status, --where as list's
main.add_command(diff_command, "diff")
main.add_command(logs_command, "logs")
main.add_command(metrics_command, "metrics")
main.add_command(serve_command, "serve")
main.add_command(report_command, "report")
main.add_command(search_command, "search")

if __name__ == "__main__":  # pragma: no cover
    main()
