"""``dbdict serve``: the web dashboard (read-only unless ``--allow-actions``), bound to
127.0.0.1 unless ``--host`` says otherwise; ``dbdict report -o FILE``: the same pages as one
HTML file that opens offline."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import click

from dbdict_worker.cli.common import db_options, handle_errors, open_store
from dbdict_worker.params import parse_statuses, parse_where
from dbdict_worker.errors import DbdictError, UsageError

CONTEXT = {"help_option_names": ["-h", "--help"]}
EXTRA_HINT = "the dashboard needs: pip install 'dbdict-worker[dashboard]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def _need_extra() -> None:
    """One line naming the extra when Starlette, uvicorn or Jinja2 is missing."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise DbdictError(EXTRA_HINT) from None


@click.command("serve", context_settings=CONTEXT)
@click.option("--host", default=None, metavar="ADDRESS",
              help=f"Address to listen on (default {DEFAULT_HOST}). Any other address makes "
                   "the jobs readable by whoever reaches it: prefer an ssh tunnel.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=DEFAULT_PORT,
              show_default=True, help="Port (0: any free one, printed).")
@click.option("--allow-actions", is_flag=True,
              help="Offer cancel / requeue / set-priority, protected by a token printed now.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              metavar="SECONDS", help="How often the pages refresh.")
@db_options
@handle_errors
def serve_command(host: str | None, port: int, allow_actions: bool, interval: float,
                  db: str | None, table: str | None, debug: bool) -> None:
    """Serve the web dashboard: overview, jobs, each job, results (live).

    It listens on 127.0.0.1 only; from a laptop, open an ssh tunnel to the machine it runs
    on (ssh -N -L 8765:127.0.0.1:8765 user@login-node) and browse http://127.0.0.1:8765."""
    _need_extra()
    import uvicorn

    from dbdict_worker.dashboard import security
    from dbdict_worker.dashboard.app import create_app

    bind = host if host is not None else DEFAULT_HOST
    warning = security.check_bind(bind, explicit=host is not None)
    token = security.new_token() if allow_actions else None
    with open_store(db, table) as store:
        app = create_app(store, table=table, interval=interval, token=token, bind=bind)
        sock = _listen(bind, port)
        actual = sock.getsockname()[1]
        _announce(store.where, bind, actual, token, warning)
        config = uvicorn.Config(app, log_level="debug" if debug else "warning",
                                access_log=debug, lifespan="off")
        server = uvicorn.Server(config)
        server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, opened here so that port 0 can be printed before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _announce(where: str, host: str, port: int, token: str | None, warning: str | None) -> None:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    url = f"http://{shown}:{port}/" + (f"#token={token}" if token else "")
    if warning:
        click.echo(warning, err=True)
    click.echo(f"dbdict dashboard of {where}")
    click.echo(f"  open {url}")
    if token:
        click.echo(f"  actions are on; their token (keep it private): {token}")
    click.echo("  from a laptop, through ssh:")
    click.echo(f"    ssh -N -L {port}:127.0.0.1:{port} {_user()}@{socket.gethostname()}")
    click.echo(f"    then open http://127.0.0.1:{port}/" + (f"#token={token}" if token else ""))
    click.echo("  Ctrl-C stops it.")
    sys.stdout.flush()


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"


@click.command("report", context_settings=CONTEXT)
@click.option("--where", "-w", multiple=True, metavar="KEY=VALUE",
              help="Only jobs whose parameter KEY equals VALUE (repeatable, ANDed).")
@click.option("--status", "-s", "status", multiple=True, metavar="STATUS",
              help="Only jobs with this status (repeatable; the results default to DONE).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, writable=True),
              help="The HTML file to write (e.g. sweep.html).")
@click.option("--max-rows", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Jobs of the table the report holds at most (the first by id).")
@db_options
@handle_errors
def report_command(where: tuple[str, ...], status: tuple[str, ...], output: str,
                   max_rows: int, db: str | None, table: str | None, debug: bool) -> None:
    """Write one self-contained HTML file (overview, results plots, jobs table) that opens
    offline: to attach to a lab notebook or send to a colleague."""
    _need_extra()
    from dbdict_worker.dashboard import report

    pairs = parse_where(where)
    statuses = [s.name for s in parse_statuses(status)]
    with open_store(db, table) as store:
        collected = report.collect(store, table=table or store.table, where=pairs,
                                   statuses=statuses or None, max_rows=max_rows)
    html = report.render(collected)
    Path(output).write_text(html, encoding="utf-8")
    jobs = collected["jobs"]
    click.echo(f"wrote {output}: {len(jobs['rows'])} of {jobs['total']} jobs, "
               f"{collected['results']['rows_shown']} with results", err=True)
