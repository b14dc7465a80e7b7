"""What every command shares: the database options, opening the store, and turning errors
into one line on stderr with the right exit code (1 operational failure, 2 usage error)."""
from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Callable, Iterable

import click

from dbdict_worker import state as statemod
from dbdict_worker.constants import Status
from dbdict_worker.errors import DbdictError, UsageError

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
    f = click.option(
        "--db", envvar="DBDICT_DB", metavar="URL",
        help="Database URL: postgresql://user@host/db[/table] or sqlite:///path. "
             "Env: DBDICT_DB. Default: the SQLite file ./dbdict.sqlite. Passwords belong in "
             "PGPASSWORD or ~/.pgpass, not on the command line.",
    )(f)
    return f


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
            return f(*args, **kwargs)
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
            click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for details)",
                       err=True)
            sys.exit(1)

    return wrapper


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


def selection_args(ids: Iterable[int], where: Iterable[str], status: Iterable[str],
                   table: str | None, *, need_one: bool) -> dict[str, Any]:
    """The keyword arguments of ``Store.selection`` for a command's selection options."""
    ids = list(ids)
    where_pairs = parse_where(where)
    statuses = []
    for s in status:
        try:
            statuses.append(Status.parse(s))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if need_one and not (ids or where_pairs or statuses or table):
        raise UsageError("select jobs with ids, --where, --status, --table or --all")
    return {
        "ids": ids or None,
        "where": where_pairs,
        "statuses": statuses or None,
        "tables": [table] if table else None,
    }
