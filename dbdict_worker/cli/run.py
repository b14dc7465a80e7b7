"""``dbdict run`` (one experiment here, no database) and ``dbdict help TOPIC``."""
from __future__ import annotations

import sys
import time

import click

from dbdict_worker.job import local as localrun
from dbdict_worker.cli.common import handle_errors
from dbdict_worker.cli.policy import limit_options, limits_given
from dbdict_worker.errors import DbdictError, UsageError
from dbdict_worker.state import format_conf

CONTEXT = {"help_option_names": ["-h", "--help"]}


class ExperimentFailed(DbdictError):
    """The experiment ended in ERR_RUN or ERR_START (exit 1, one line)."""


@click.command("run", context_settings=CONTEXT)
@click.argument("args", nargs=-1, metavar="[EXPERIMENT] [PARAM | FILE.conf]...")
@click.option("--file", "files", multiple=True, type=click.Path(dir_okay=False),
              metavar="FILE.conf", help="Parameters from a .conf file (repeatable; later files "
              "and inline PARAMs override earlier ones). A file's dbdict.experiment is used "
              "when EXPERIMENT is not given, so `--file DIR/orig.conf` reruns a job.")
@click.option("--cmd", "command", metavar="TEMPLATE",
              help="Run a command instead of a Python function: an argv template such as "
                   "'python train.py --lr {lr} --out {workdir}' (see `dbdict help experiment`).")
@click.option("--shell", is_flag=True,
              help="With --cmd: run the template with /bin/sh -c (values are shell-quoted).")
@click.option("--workdir", "-w", metavar="DIR",
              help="Working directory (default: ./<experiment>,<params>-<hash>). An existing "
                   "one is resumed from its current.conf.")
@click.option("--dry-run", "-n", is_flag=True,
              help="Run in a temporary workdir, removed afterwards; print the final state.")
@click.option("--force", is_flag=True,
              help="Run even if current.conf says the job is DONE or RUNNING.")
@click.option("--redirect", "-r", is_flag=True,
              help="Send the experiment's stdout and stderr to workdir/stdout and "
                   "workdir/stderr (the worker always does).")
@click.option("--grace", type=click.FloatRange(min=0), default=localrun.DEFAULT_GRACE,
              show_default=True, metavar="SECONDS",
              help="After SIGTERM/SIGINT, how long the experiment has to save and return "
                   "before it is killed (a second signal kills at once).")
@limit_options
@click.option("--save-interval", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Coalesce the experiment's saves to at most one per interval "
                   "(default: DBDICT_SAVE_INTERVAL or 1).")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@handle_errors
def run_command(args: tuple[str, ...], files: tuple[str, ...], command: str | None,
                shell: bool, workdir: str | None, dry_run: bool, force: bool, redirect: bool,
                grace: float, save_interval: float | None, debug: bool) -> None:
    """Run one experiment here, in a child process, without a database.

    EXPERIMENT is a dotted path to experiment(state, channel); PARAMs are key=value,
    key::pkg.Builder or FILE.conf (see `dbdict help parameters`). The workdir gets orig.conf,
    current.conf (the saved state), stdout/stderr and the experiment's files.

    \b
    Exit status: 0 COMPLETE; 75 INCOMPLETE (stopped or returned INCOMPLETE: the same
    command resumes it); 1 the experiment failed (ERR_RUN, ERR_START); 2 usage error.

    \b
    Examples:
      dbdict run dbdict_worker.examples.add first=1 second=2
      dbdict run dbdict_worker.examples.loop total=1000 --dry-run
      dbdict run --file base.conf --file more.conf lr=0.01
      dbdict run --cmd 'python -m dbdict_worker.examples.cmd_step' x=21
    """
    if shell and command is None:
        raise UsageError("--shell goes with --cmd")
    experiment, params = localrun.parse_args(args, files, command=command, shell=shell)
    job = localrun.plan(experiment, params, workdir=workdir, dry_run=dry_run, force=force)
    started = time.monotonic()
    result = localrun.run(job, redirect=redirect, grace=grace, save_interval=save_interval,
                          **limits_given())
    outcome = result.outcome
    if dry_run:
        click.echo(format_conf(outcome.state), nl=False)
    line = localrun.summary(job, outcome)
    code = localrun.exit_code(outcome)
    if code == localrun.EXIT_FAILED:
        raise ExperimentFailed(line)
    click.echo(f"dbdict run: {line} in {time.monotonic() - started:.2f} s", err=True)
    sys.exit(code)


# --- help topics --------------------------------------------------------------------------

TOPICS = {
    "experiment": "How to write an experiment (a Python function or any command).",
    "parameters": "How to give parameters: key=value, key::builder, .conf files, sweeps.",
    "example": "Runnable examples from dbdict_worker.examples.",
}

EXPERIMENT = """\
An experiment is a function experiment(state, channel) in an importable module, named by its
dotted path (mypkg.train.run):

    from dbdict_worker import COMPLETE, INCOMPLETE

    def run(state, channel):
        state.setdefault('step', 0)
        while state.step < 1000:
            state.step += 1
            if channel.save_and_switch() == 'stop':
                return INCOMPLETE          # resumed later from state.step
        state.result = 42
        return COMPLETE                    # None means COMPLETE too

It runs in its own process, with the current directory set to its workdir (write results
and checkpoints there; $DBDICT_EXPERIMENT_TEMPDIR is a scratch directory removed afterwards;
files named *.no_sync are never copied to the exproot).

state holds the parameters with attribute access (state.model.n_hidden) and, under
state.dbdict, what dbdict-worker knows (id, table, experiment, ...). Store results in it:
values may be int, float, str, bool, None and lists/tuples of those. It is saved to
current.conf (and to the database, by the worker) on channel.save() and at the end; a
resumed job starts from its last saved state and finds its own files.

channel.switch() (or channel()) returns None, or 'stop' once SIGTERM, SIGINT or SIGUSR2
arrived: then save what you need and return INCOMPLETE soon (after the grace period the
process is killed; its last saved state is kept). channel.save() persists the state;
channel.save_and_switch() does both. All three are cheap enough for every iteration:
saves are written at most once per DBDICT_SAVE_INTERVAL seconds (default 1), and a
pending one is always written when 'stop' is first returned and at the end.

An exception ends the job as ERR_RUN: the traceback goes to workdir/stderr, its last line
to dbdict.error. An experiment that cannot be imported ends as ERR_START.

Command experiments run any program instead (dbdict-enqueue --cmd / dbdict run --cmd):

    dbdict run --cmd 'python train.py --lr {lr} --out {workdir}' lr=0.1

{key} is replaced by the parameter (format specs work: {lr:.2e}); {workdir}, {tempdir}
and {state_file} are filled in too. No shell runs unless --shell is given. The program
finds the state in state.json (flat dotted keys) and in DBDICT_P_<KEY> variables
(model.n_hidden -> DBDICT_P_MODEL__N_HIDDEN; strings as-is, other values as JSON). Exit 0
is COMPLETE, 75 INCOMPLETE, anything else ERR_RUN; values it writes into state.json are
saved with the state.
"""

PARAMETERS = """\
Each PARAM is one of:

  key=value        value is a Python literal (3, 0.1, 'a', [1, 2], True, None, nan);
                   anything else is the string itself (name=adam). Nothing is evaluated.
  a.b.c=value      dotted keys nest: state.a.b.c
  key::builder     sets key.__builder__; make(state.key) calls the builder with the
                   sibling keys as keyword arguments
  FILE.conf        one 'key = value' per line, # comments (orig.conf and current.conf
                   are in this format)

Example of a builder (the original's):

  dbdict run dbdict_worker.examples.regexp 'regexp::re.compile' "regexp.pattern='a.*c'"

  def experiment(state, channel):
      regexp = make(state.regexp)   # re.compile(pattern='a.*c')
      state.result = regexp.sub('blahblah', 'hello abbbbc there')

dbdict-enqueue also takes sweeps: key={{1,2,3}} makes one job per value (several braced
keys: every combination), and --sweep FILE.toml for conditional sweeps.
Keys under dbdict.* are reserved.
"""

EXAMPLE = """\
These run as they are (the code is in dbdict_worker/examples/):

  $ dbdict run dbdict_worker.examples.add first=1 second=2 --dry-run
  $ dbdict run dbdict_worker.examples.loop total=50 sleep=0.01 --dry-run
  $ dbdict run dbdict_worker.examples.regexp 'regexp::re.compile' "regexp.pattern='a.*c'" --dry-run
  $ dbdict run --cmd 'python -m dbdict_worker.examples.cmd_step' x=21 --dry-run

Without --dry-run the job keeps its workdir (./loop,...-<hash>/ with orig.conf,
current.conf, stdout, stderr). Interrupt a long loop with Ctrl-C and run the same command
again: it resumes from the step it had saved.

  $ dbdict run dbdict_worker.examples.loop total=2000 sleep=0.005
  ^C
  $ dbdict run dbdict_worker.examples.loop total=2000 sleep=0.005

On a cluster, enqueue a sweep and let workers run it:

  $ dbdict-enqueue dbdict_worker.examples.loop 'total={{100,1000}}' 'sleep={{0,0.001}}'
  $ dbdict-worker start --exproot ssh://storage:/data/exps --until-empty
"""


@click.command("help", context_settings=CONTEXT)
@click.argument("topic", required=False, type=click.Choice(sorted(TOPICS)))
def help_command(topic: str | None) -> None:
    """Help on a topic: experiment, parameters or example."""
    if topic is None:
        click.echo("Topics (dbdict help TOPIC):")
        for name, text in TOPICS.items():
            click.echo(f"  {name:<12} {text}")
        click.echo("\nCommands: dbdict --help, dbdict COMMAND --help, dbdict-enqueue --help")
        return
    click.echo({"experiment": EXPERIMENT, "parameters": PARAMETERS, "example": EXAMPLE}[topic],
               nl=False)
