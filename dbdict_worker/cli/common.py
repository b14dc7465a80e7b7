"""What every command shares: the database options, opening the store, and turning errors
into one line on stderr with the right exit code (1 operational failure, 2 usage error)."""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable, Iterable

import click

from dbdict_worker.errors import DbdictError, NotFound, UsageError
from dbdict_worker.names import table_list
# The --where parser lives with the parameters (the dashboard reads the same syntax).
from dbdict_worker.params import parse_statuses, parse_where  # noqa: F401

log = logging.getLogger("dbdict_worker")

#: How long a command waits for an unreachable database before failing (the worker waits
#: much longer); DBDICT_RETRY_SECONDS overrides it.
CLI_RETRY_SECONDS = 15.0


def db_options(f: Callable) -> Callable:
    """``--db``/``DBDICT_DB``, ``--table``/``DBDICT_TABLE`` and ``--debug``."""
    f = click.option(
        "--debug", is_flag=True, help="Show tracebacks and debug logging."
    )(f)
    f = click.option(
        "--table", "-t", envvar="DBDICT_TABLE", metavar="NAME",
        help="Job table (group of jobs). Env: DBDICT_TABLE. Default: all tables when "
             "reading, 'default' when enqueueing.",
    )(f)
    return _db_option(f)


def db_only_options(f: Callable) -> Callable:
    """``--db``/``DBDICT_DB`` and ``--debug``, for commands where a table means nothing
    (``dbdict db upgrade``, ``dbdict-worker drain``)."""
    f = click.option(
        "--debug", is_flag=True, help="Show tracebacks and debug logging."
    )(f)
    return _db_option(f)


def _db_option(f: Callable) -> Callable:
    return click.option(
        "--db", envvar="DBDICT_DB", metavar="URL",
        help="Database URL: postgresql://user@host/db[/table] or sqlite:///path. "
             "Env: DBDICT_DB. Default: the SQLite file ./dbdict.sqlite. Passwords belong in "
             "PGPASSWORD or ~/.pgpass, not on the command line.",
    )(f)


def lease_option(f: Callable) -> Callable:
    """``--lease``/``DBDICT_LEASE``: past it without a heartbeat, a worker is lost."""
    from dbdict_worker.worker.liveness import DEFAULT_LEASE

    return click.option(
        "--lease", type=click.FloatRange(min=0, min_open=True), envvar="DBDICT_LEASE",
        default=DEFAULT_LEASE, show_default=True, metavar="SECONDS",
        help="A worker whose last heartbeat is older than this is lost: give the workers' "
             "--lease if they run with another one (env DBDICT_LEASE).",
    )(f)


def json_nan_option(f: Callable) -> Callable:
    """``--json-nan string|null|raw``: how JSON output writes NaN and infinities."""
    from dbdict_worker.export import JSON_NAN_FORMS

    return click.option(
        "--json-nan", "json_nan", type=click.Choice(JSON_NAN_FORMS), default="string",
        show_default=True,
        help="JSON output: NaN and infinities as the strings \"NaN\", \"Infinity\", "
             "\"-Infinity\" (standard JSON that keeps the value), as null, or raw (bare NaN/"
             "Infinity, which Python reads but JSON.parse and jq reject).",
    )(f)


def setup_logging(debug: bool, prog: str = "dbdict") -> None:
    """Log lines on stderr, prefixed by the command's name: INFO by default (one line per
    event; journald adds the time), DEBUG with timestamps with --debug."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format=f"{prog}: %(message)s" if not debug else "%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        logging.getLogger("alembic").setLevel(logging.WARNING)
        if not sys.stderr.isatty():
            # A command's failure is its one line on stderr; "retrying..." notices are for a
            # person watching a terminal (and for the worker's log).
            logging.getLogger("dbdict_worker.db").setLevel(logging.ERROR)


def open_store(db: str | None, table: str | None, *, check_schema: bool = True):
    """Open the store for a command (the library says once, when it creates the default
    SQLite file, that no URL was given)."""
    from dbdict_worker.db.connect import retry_seconds_from_env
    from dbdict_worker.store import Store

    return Store.open(db, table=table, check_schema=check_schema,
                      retry_seconds=retry_seconds_from_env(CLI_RETRY_SECONDS))


def handle_errors(f: Callable) -> Callable:
    """Run a command body; a DbdictError becomes one line on stderr and its exit code,
    anything unexpected becomes one line and exit 1 (a traceback with --debug)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = click.get_current_context().find_root()
        debug = bool(kwargs.get("debug")) or bool(root.params.get("debug"))
        setup_logging(debug, root.info_name or "dbdict")
        try:
            result = f(*args, **kwargs)
            sys.stdout.flush()  # a reader gone before the last lines: caught here, not at exit
            return result
        except BrokenPipeError:
            quiet_broken_pipe()
        except DbdictError as exc:
            if debug:
                log.exception("failed")
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # an unexpected failure: still one line
            if debug:
                log.exception("internal error")
            from dbdict_worker.db.connect import is_schema_damage

            if is_schema_damage(exc):  # a statement outside the store's retries (exports)
                why = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                click.echo(f"error: damaged dbdict schema: {why} (restore a backup)", err=True)
                sys.exit(1)
            click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for details)",
                       err=True)
            sys.exit(1)

    return wrapper


#: The exit status of a command whose reader went away (``dbdict export | head -1``): the
#: shells' 128 + SIGPIPE, what ``cat`` or ``yes`` would give (seen only with pipefail).
EXIT_BROKEN_PIPE = 128 + 13


def quiet_broken_pipe() -> None:
    """The reader of our standard output is gone: exit at once, without a message. Standard
    output is pointed at /dev/null first so that the interpreter's final flush of what is
    still buffered does not complain ("Exception ignored ... BrokenPipeError") either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


def selection_args(ids: Iterable[int], where: Iterable[str], status: Iterable[str],
                   table: str | None, *, need_one: bool) -> dict[str, Any]:
    """The keyword arguments of ``Store.selection`` for a command's selection options."""
    ids = list(ids)
    where_pairs = parse_where(where)
    statuses = parse_statuses(status)
    if need_one and not (ids or where_pairs or statuses or table):
        raise UsageError("select jobs with ids, --where, --status, --table or --all")
    return {
        "ids": ids or None,
        "where": where_pairs,
        "statuses": statuses or None,
        "tables": table_list(table),  # "t1,t2": both, as the worker reads DBDICT_TABLE
    }


def check_job_table(job: Any, table: str | None) -> None:
    """NotFound unless ``job`` is in ``table`` (``--table``, DBDICT_TABLE or the URL's; a
    comma-separated list is any of them); no table: any job."""
    names = table_list(table)
    if names and job.table not in names:
        wanted = " or ".join(repr(t) for t in names)
        raise NotFound(f"job {job.id} is in table {job.table!r}, not {wanted}")
