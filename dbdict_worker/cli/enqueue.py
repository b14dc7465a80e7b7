"""``dbdict-enqueue``: add jobs (one per parameter combination) to the queue."""
from __future__ import annotations

import json
import shutil
import sys
from typing import Any

import click

from dbdict_worker import params as paramsmod
from dbdict_worker import state as statemod
from dbdict_worker.job.cmdexp import CommandTemplate
from dbdict_worker.cli.common import db_options, handle_errors, log, open_store
from dbdict_worker.constants import (DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RESTARTS, DEFAULT_PRIORITY,
                                     DEFAULT_TABLE)
from dbdict_worker.errors import ResolveError, UsageError
from dbdict_worker.names import check_table_name

#: Show a progress bar (on a terminal) from this many jobs on.
PROGRESS_FROM = 2000


def build_states(params: tuple[str, ...], sweep_file: str | None) -> list[dict[str, Any]]:
    """Every parameter combination, in order: ``.conf`` files first, then each ``--sweep``
    combination, then the command line (which may hold ``{{a,b}}`` sweeps) on top."""
    confs, inline = paramsmod.split(params)
    base: dict[str, Any] = {}
    for conf in paramsmod.read_confs(confs):
        base.update(conf)  # a reserved key in a file is refused, as on the command line
    return paramsmod.combinations(base, inline, sweep_file=sweep_file)


def check_experiment(experiment: str) -> str | None:
    """Refuse a malformed path, or one whose module imports but lacks the symbol; return a
    note for an experiment whose code is not importable here (as on a login node)."""
    statemod.check_experiment_path(experiment)
    module = experiment.rsplit(".", 1)[0]
    try:
        statemod.resolve(experiment)
    except ResolveError as exc:
        top = module.split(".")[0]
        import importlib.util

        try:
            importable = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            importable = False
        if importable:
            raise UsageError(str(exc)) from None
        return f"note: {experiment} is not importable here (fine if the workers have the code)"
    return None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("experiment", required=False)
@click.argument("params", nargs=-1)
@click.option("--cmd", "command", metavar="TEMPLATE",
              help="Enqueue a command experiment instead (no EXPERIMENT then): an argv "
                   "template such as 'python train.py --lr {lr} --out {workdir}'; {key} is "
                   "filled from each job's parameters, plus {workdir}, {tempdir}, "
                   "{state_file}. Exit 0 = COMPLETE, 75 = INCOMPLETE.")
@click.option("--shell", is_flag=True,
              help="With --cmd: run the template with /bin/sh -c (values are shell-quoted).")
@click.option("--priority", "-p", type=float, default=DEFAULT_PRIORITY, show_default=True,
              help="Higher runs first; ties by id.")
@click.option("--force", is_flag=True,
              help="Add jobs even when an equal job (table, experiment, parameters) exists.")
@click.option("--sweep", "sweep_file", type=click.Path(dir_okay=False),
              help="A TOML or JSON sweep file (execo's sweep(): lists are levels, tables of "
                   "levels give conditional sub-sweeps).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Enqueue each combination N times (state.dbdict.replica is 0..N-1).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=DEFAULT_MAX_ATTEMPTS,
              show_default=True, help="Losses (dead workers) tolerated before ERR_RUN.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=DEFAULT_MAX_RESTARTS,
              show_default=True,
              help="INCOMPLETE returns in a row without new progress (no change to the state) "
                   "tolerated before ERR_RUN; after each, the job waits longer before it "
                   "runs again.")
@click.option("--dry-run", is_flag=True, help="Print the jobs; write nothing.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"created": [ids], "skipped": N}.')
@db_options
@handle_errors
def main(experiment: str | None, params: tuple[str, ...], command: str | None, shell: bool,
         priority: float, force: bool,
         sweep_file: str | None, repeat: int, max_attempts: int, max_restarts: int,
         dry_run: bool, as_json: bool, db: str | None, table: str | None, debug: bool) -> None:
    """Add one job per parameter combination to the queue.

    EXPERIMENT is a dotted path to a function experiment(state, channel) (omit it with
    --cmd). PARAMS are key=value (a Python literal, else a string), key::pkg.Builder, or
    FILE.conf. key={{a,b,c}} sweeps over values (several: the cartesian product).

    \b
    Examples:
      dbdict-enqueue mypkg.train.run lr=0.1 model.n_hidden=100
      dbdict-enqueue mypkg.train.run 'lr={{0.1,0.01}}' 'n={{1,2,3}}' --json
      dbdict-enqueue mypkg.train.run base.conf --sweep grid.toml --repeat 3
      dbdict-enqueue --cmd 'python train.py --lr {lr} --out {workdir}' 'lr={{0.1,0.01}}'
    """
    if table is not None:
        check_table_name(table)  # refused before anything is parsed, dry run included
    if command is not None:
        # With --cmd every positional argument is a parameter.
        params = ((experiment,) if experiment is not None else ()) + params
        template = CommandTemplate.from_text(command, shell=shell)
        states = build_states(params, sweep_file)
        template.check(states)
        experiment = template.encode()
        note = None
        if not template.shell and shutil.which(template.argv[0]) is None:
            note = f"note: {template.argv[0]} is not on PATH here (fine if the workers have it)"
    else:
        if shell:
            raise UsageError("--shell goes with --cmd")
        if experiment is None:
            raise UsageError("missing EXPERIMENT (a dotted path such as mypkg.train.run) "
                             "or --cmd TEMPLATE")
        states = build_states(params, sweep_file)
        note = check_experiment(experiment)
    if dry_run:
        if as_json:
            click.echo(json.dumps([dict(s) for s in states], allow_nan=True))
        else:
            for st in states:
                click.echo(" ".join([experiment] + [f"{k}={statemod.format_value(v)}"
                                                    for k, v in st.items()]))
            click.echo(f"{len(states) * repeat} jobs (dry run: nothing written)", err=True)
        return

    with open_store(db, table) as store:
        total = len(states) * repeat
        show_bar = total >= PROGRESS_FROM and sys.stderr.isatty() and not as_json
        with click.progressbar(length=total, label="enqueue", file=sys.stderr,
                               hidden=not show_bar) as bar:
            done = [0]

            def progress(n: int) -> None:
                bar.update(n - done[0])
                done[0] = n

            result = store.enqueue(experiment, states, priority=priority, force=force,
                                   repeat=repeat, max_attempts=max_attempts,
                                   max_restarts=max_restarts, progress=progress)
    if note:
        log.info(note)
    if as_json:
        click.echo(json.dumps({"created": result.created, "skipped": result.skipped}))
    else:
        where = table or store.table or DEFAULT_TABLE
        click.echo(f"created {len(result.created)} jobs in table {where!r}"
                   + (f" (ids {result.created[0]}-{result.created[-1]})"
                      if result.created else "")
                   + f", skipped {result.skipped} already queued")


if __name__ == "__main__":  # pragma: no cover
    main()
