"""``dbdict search``: run (or continue) a search whose trials are jobs; ``--status NAME``."""
from __future__ import annotations

import json
import signal
import sys
from typing import Any

import click

from dbdict_worker.cli.common import db_options, handle_errors, open_store
from dbdict_worker.errors import UsageError
from dbdict_worker.search import PRUNERS, SAMPLERS
from dbdict_worker.state import format_value



class _Stopped(BaseException):
    """SIGTERM, raised in the driver's loop (a BaseException: nothing on the way catches it)."""


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in sorted(params.items()))


@click.command("search", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("experiment", required=False)
@click.option("--space", "space_path", metavar="SPACE.toml",
              help="The space file: the parameters to search and how (see README).")
@click.option("--objective", metavar="KEY", help="The state key a DONE trial sets.")
@click.option("--direction", type=click.Choice(["minimize", "maximize"]), default="minimize",
              show_default=True)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(PRUNERS), default="none", show_default=True,
              help="Stop bad trials early from the metrics they report (asha: successive "
                   "halving).")
@click.option("--prune-on", metavar="KEY",
              help="The reported metric the pruner reads (default: the objective).")
@click.option("--budget", type=click.IntRange(min=1), default=50, show_default=True,
              help="Trials in all.")
@click.option("--max-pending", type=click.IntRange(min=1), default=4, show_default=True,
              help="Trials queued or running at once (about the slots of your workers).")
@click.option("--seed", type=int, help="The sampler's seed.")
@click.option("--name", help="The search's name (default: derived from the arguments).")
@click.option("--poll", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between looks at the trials.")
@click.option("--status", "status_name", metavar="NAME",
              help="Show a search's progress, best trial and pending trials, and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --status: JSON.")
@db_options
@handle_errors
def search_command(experiment: str | None, space_path: str | None, objective: str | None,
                   direction: str, sampler: str, pruner: str, prune_on: str | None,
                   budget: int, max_pending: int, seed: int | None, name: str | None,
                   poll: float, status_name: str | None, as_json: bool, db: str | None,
                   table: str | None, debug: bool) -> None:
    """Search EXPERIMENT's parameters with Optuna's samplers: keep up to --max-pending
    trials queued or running on the workers, tell the sampler each finished one, enqueue the
    next points, until --budget trials ran; then print the best.

    The search lives in the database: run the same command again after a Ctrl-C, a
    kill or a reboot, and it continues (no trial lost or run twice). A second driver on the
    same search waits until the first stops. Needs pip install 'dbdict-worker[search]'.

    \b
    Examples:
      dbdict search mypkg.train.run --space space.toml --objective val_loss --budget 60
      dbdict search mypkg.train.run --space space.toml --objective acc \\
          --direction maximize --pruner asha --prune-on acc --name lr-search
      dbdict search --status lr-search
    """
    if status_name:
        from dbdict_worker.search.status import status_lines, search_status

        with open_store(db, table) as store:
            st = search_status(store, status_name)
        if as_json:
            click.echo(json.dumps(st, indent=2, default=str))
        else:
            for line in status_lines(st):
                click.echo(line)
        return
    if not experiment or not space_path or not objective:
        raise UsageError("dbdict search needs EXPERIMENT, --space FILE and --objective KEY "
                         "(or --status NAME)")
    from dbdict_worker.search.driver import run
    from dbdict_worker.search.space import load_space

    _, space = load_space(space_path)  # a bad file is refused before the database is opened

    def echo(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    def stop(signum: int, frame: Any) -> None:
        raise _Stopped(signum)

    # SIGTERM (systemd, kill) stops the driver as Ctrl-C does: the lock goes, the trials
    # already queued keep running, the same command continues the search.
    signal.signal(signal.SIGTERM, stop)
    with open_store(db, table) as store:
        try:
            out = run(store, experiment, space, objective=objective, direction=direction,
                      sampler=sampler, pruner=pruner, prune_on=prune_on, budget=budget,
                      max_pending=max_pending, seed=seed, table=table, name=name, poll=poll,
                      echo=echo)
        except (KeyboardInterrupt, _Stopped) as e:
            click.echo("stopped: the trials already queued keep running on the workers; "
                       "run the same command to continue the search", err=True)
            sys.exit(128 + (e.args[0] if isinstance(e, _Stopped) else signal.SIGINT))
    c = out.counts
    click.echo(f"search {out.name} finished: {c['done']} done, {c['failed']} failed, "
               f"{c['pruned']} pruned of {c['budget']}")
    if out.best is None:
        click.echo("no trial completed with an objective value")
        sys.exit(1)
    b = out.best
    click.echo(f"best: job {b['job_id']} (trial {b['trial']}) {objective}={b['value']:.6g} "
               f"{_params_text(b['params'])}")
