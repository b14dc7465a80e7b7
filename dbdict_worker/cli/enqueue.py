"""``dbdict-enqueue``: add jobs (one per parameter combination) to the queue."""
from __future__ import annotations

import json
import shutil
import sys

import click

from dbdict_worker import params as paramsmod
from dbdict_worker import state as statemod
from dbdict_worker.job.cmdexp import CommandTemplate
from dbdict_worker.cli.common import db_options, handle_errors, log, open_store
from dbdict_worker.cli.policy import enqueue_policy, policy_options
from dbdict_worker.cli.provenance import enqueue_submission, no_provenance_option
from dbdict_worker.constants import (DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RESTARTS, DEFAULT_PRIORITY,
                                     DEFAULT_TABLE, MAX_ENQUEUE_JOBS)
from dbdict_worker.errors import UsageError
from dbdict_worker.expcheck import check_experiment
from dbdict_worker.names import one_table

#: Show a progress bar (on a terminal) from this many jobs on.
PROGRESS_FROM = 2000


def build_states(params: tuple[str, ...], sweep_file: str | None, experiment: str, *,
                 repeat: int, yes: bool) -> paramsmod.Combinations:
    """Every parameter combination, in order (made one at a time, counted first): ``.conf``
    files first, then each ``--sweep`` combination, then the command line (which may hold
    ``{{a,b}}`` sweeps) on top. More than MAX_ENQUEUE_JOBS jobs need ``--yes``."""
    confs, inline = paramsmod.split(params)
    base, notes = paramsmod.conf_base(confs, experiment)  # orig.conf reads back
    for note in notes:
        log.info(note)
    states = paramsmod.Combinations(base, inline, sweep_file=sweep_file)
    paramsmod.check_count(states.count * repeat, yes=yes)
    return states


def table_arg(table: str | None) -> str | None:
    """The one table of ``--table``/DBDICT_TABLE (a list, as the worker reads, is refused)."""
    ctx = click.get_current_context()
    from_env = ctx.get_parameter_source("table") == click.core.ParameterSource.ENVIRONMENT
    return one_table(table, "DBDICT_TABLE" if from_env else "--table")


def print_dry_run(experiment: str, states: paramsmod.Combinations, repeat: int,
                  as_json: bool) -> None:
    """The jobs an enqueue would make, streamed (a JSON array with --json)."""
    if as_json:
        click.echo("[", nl=False)
        for i, st in enumerate(states):
            click.echo(("," if i else "") + json.dumps(st, allow_nan=True), nl=False)
        click.echo("]")
        return
    for st in states:
        click.echo(" ".join([experiment] + [f"{k}={statemod.format_value(v)}"
                                            for k, v in st.items()]))
    click.echo(f"{states.count * repeat} jobs (dry run: nothing written)", err=True)


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
@policy_options
@no_provenance_option
@click.option("--no-check", is_flag=True,
              help="Do not import the experiment's code here (only its dotted path is "
                   "checked): for code that only imports on the workers.")
@click.option("--yes", is_flag=True,
              help=f"Enqueue more than {MAX_ENQUEUE_JOBS:,} jobs at once (refused without it: "
                   "a sweep that large is usually a mistake).")
@click.option("--dry-run", is_flag=True, help="Print the jobs; write nothing.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"created": [ids], "skipped": N}.')
@db_options
@handle_errors
def main(experiment: str | None, params: tuple[str, ...], command: str | None, shell: bool,
         priority: float, force: bool,
         sweep_file: str | None, repeat: int, max_attempts: int, max_restarts: int,
         no_check: bool, yes: bool,
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
    table = table_arg(table)  # refused before anything is parsed, dry run included
    if command is not None:
        # With --cmd every positional argument is a parameter.
        params = ((experiment,) if experiment is not None else ()) + params
        template = CommandTemplate.from_text(command, shell=shell)
        experiment = template.encode()
        states = build_states(params, sweep_file, experiment, repeat=repeat, yes=yes)
        template.check(states)
        notes = []
        if not template.shell and shutil.which(template.argv[0]) is None:
            notes = [f"note: {template.argv[0]} is not on PATH here (fine if the workers have it)"]
    else:
        if shell:
            raise UsageError("--shell goes with --cmd")
        if experiment is None:
            raise UsageError("missing EXPERIMENT (a dotted path such as mypkg.train.run) "
                             "or --cmd TEMPLATE")
        statemod.check_experiment_path(experiment)
        states = build_states(params, sweep_file, experiment, repeat=repeat, yes=yes)
        notes = check_experiment(experiment, import_code=not no_check)
    if dry_run:
        for note in notes:
            log.info(note)
        print_dry_run(experiment, states, repeat, as_json)
        return

    with open_store(db, table) as store:
        total = states.count * repeat
        show_bar = total >= PROGRESS_FROM and sys.stderr.isatty() and not as_json
        with click.progressbar(length=total, label="enqueue", file=sys.stderr,
                               hidden=not show_bar) as bar:
            done = [0]

            def progress(n: int) -> None:
                bar.update(n - done[0])
                done[0] = n

            result = store.enqueue(experiment, states, priority=priority, force=force,
                                   repeat=repeat, max_attempts=max_attempts,
                                   max_restarts=max_restarts, progress=progress,
                                   policy=enqueue_policy(),
                                   submission=enqueue_submission(
                                       experiment, is_command=command is not None))
    # Notes come after a successful enqueue, so that an error stays the one line printed.
    for note in notes:
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
