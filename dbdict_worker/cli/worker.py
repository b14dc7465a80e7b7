"""``dbdict-worker``: the daemon (start), and its remote control (drain, status, bench)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import click

from dbdict_worker.cli.common import (db_only_options, db_options, handle_errors, lease_option,
                                      open_store)
from dbdict_worker.constants import Status
from dbdict_worker.errors import UsageError
from dbdict_worker.names import check_table_name
from dbdict_worker.signals import handling, same_handler
from dbdict_worker.worker.liveness import check_lease, drain_summary, mark_lost

CONTEXT = {"help_option_names": ["-h", "--help"]}
#: A worker waits this long for the database at start; once it runs, each call retries
#: briefly and the supervisor rides out longer outages on its own.
START_RETRY_SECONDS = 60.0


@click.group(context_settings=CONTEXT)
def main() -> None:
    """The dbdict worker daemon: start it (under systemd, HTCondor, SLURM or by hand),
    drain it, see what the workers do."""


def _hide_password_from_ps(db: str | None) -> None:
    """A password given with --db is visible to every user in ``ps``: restart ourselves with
    it in the environment (DBDICT_DB) instead, before doing anything else."""
    if not db or not any(a == "--db" or a.startswith("--db=") for a in sys.argv[1:]):
        return
    from dbdict_worker.db.connect import parse_url

    try:
        if parse_url(db).url.password is None:
            return
    except UsageError:  # a malformed URL is reported later, by the store
        return
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--db":
            skip = True
        elif not arg.startswith("--db="):
            argv.append(arg)
    env = dict(os.environ, DBDICT_DB=db)
    click.echo("dbdict-worker: moved the database password off the command line (use "
               "PGPASSWORD or ~/.pgpass)", err=True)
    os.execve(sys.executable, [sys.executable, "-m", "dbdict_worker.cli.worker", *argv], env)


def _split(values: tuple[str, ...]) -> list[str] | None:
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


@main.command(context_settings=CONTEXT)
@click.option("--db", envvar="DBDICT_DB", metavar="URL",
              help="Database URL (env DBDICT_DB); passwords belong in PGPASSWORD or ~/.pgpass.")
@click.option("--table", "-t", "tables", multiple=True, metavar="NAME",
              help="Book only from this table (repeatable; env DBDICT_TABLE, comma-separated). "
                   "Default: every table.")
@click.option("--exproot", envvar="DBDICT_EXPROOT", metavar="ROOT",
              help="Where job directories live for good: a path or ssh://host:/path "
                   "(env DBDICT_EXPROOT). Without it, workdirs stay under --workdir-base.")
@click.option("--slots", type=click.IntRange(min=1), envvar="DBDICT_SLOTS", default=1,
              show_default=True, help="Jobs run at once (env DBDICT_SLOTS).")
@click.option("--gpus", envvar="DBDICT_GPUS", metavar="0,1,..",
              help="One slot per GPU; each job sees only its GPU in CUDA_VISIBLE_DEVICES "
                   "(env DBDICT_GPUS).")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after booking N jobs.")
@click.option("--until-empty", is_flag=True,
              help="Exit when no job of its tables is ready, waiting out a restart delay, or "
                   "RUNNING under another worker (whose jobs it rescues if that worker dies), "
                   "and all slots are idle.")
@click.option("--grace", type=click.FloatRange(min=0), envvar="DBDICT_GRACE", default=60.0,
              show_default=True, help="Seconds a stopped job gets to save and return "
                                      "INCOMPLETE before SIGKILL (env DBDICT_GRACE).")
@click.option("--heartbeat", type=click.FloatRange(min=0.1), envvar="DBDICT_HEARTBEAT",
              default=10.0, show_default=True, help="Seconds between heartbeats (env "
                                                       "DBDICT_HEARTBEAT).")
@click.option("--lease", type=click.FloatRange(min=1), envvar="DBDICT_LEASE", default=60.0,
              show_default=True, help="A RUNNING job whose heartbeat is older than this is "
                                      "requeued by any live worker; at least 3 heartbeats "
                                      "(env DBDICT_LEASE).")
@click.option("--workdir-base", envvar="DBDICT_WORKDIR_BASE", metavar="DIR",
              help="Local job workdirs: DIR/<db>/<table>/<id> (env DBDICT_WORKDIR_BASE). "
                   "Default: $TMPDIR/dbdict-worker-<uid> with --exproot, else ./dbdict-jobs.")
@click.option("--poll-only", is_flag=True, help="Do not LISTEN for new jobs (behind "
                                                "poolers that drop LISTEN); poll instead.")
@click.option("--poll-interval", type=click.FloatRange(min=0.05), metavar="SECONDS",
              help="Seconds between polls for jobs (default 1 without LISTEN, 30 with it).")
@click.option("--max-env-failures", "env_failure_limit", type=click.IntRange(min=1),
              envvar="DBDICT_MAX_ENV_FAILURES", default=5, show_default=True,
              help="Failures of this machine's own environment in a row (workdir base "
                   "read-only or full, exproot not mounted, rsync missing) before the worker "
                   "exits 3; each such job goes back to the queue uncounted, and booking "
                   "pauses 2, 4, 8... s in between (env DBDICT_MAX_ENV_FAILURES).")
@click.option("--walltime", envvar="DBDICT_WALLTIME", metavar="DURATION",
              help="How long this worker may run (4h, 90m, 3600; env DBDICT_WALLTIME); under "
                   "SLURM, the job's end by default. Near the end it books no more and stops "
                   "its jobs with --grace so they are requeued with their checkpoint, then "
                   "exits 0.")
@click.option("--min-remaining", envvar="DBDICT_MIN_REMAINING", metavar="DURATION",
              help="Book no job with less than this left of the walltime (env "
                   "DBDICT_MIN_REMAINING). Default: 5m, or twice --grace if longer.")
@click.option("--log-tail", type=click.IntRange(min=0), envvar="DBDICT_LOG_TAIL",
              default=65536, show_default=True, metavar="BYTES",
              help="Keep the last BYTES of each attempt's stdout and stderr in the database, "
                   "for `dbdict logs` (updated at most once per heartbeat, and at the end); "
                   "0: keep none (env DBDICT_LOG_TAIL). The whole output stays in the workdir.")
@click.option("--debug", is_flag=True, help="Debug logging and tracebacks.")
@handle_errors
def start(db, tables, exproot, slots, gpus, max_jobs, until_empty, grace, heartbeat, lease,
          workdir_base, poll_only, poll_interval, env_failure_limit, debug,
          walltime=None, min_remaining=None, log_tail=65536) -> None:
    """Run the worker daemon: book jobs, run each in its own process, save their states,
    requeue what is stopped. SIGTERM/SIGINT: stop (jobs get --grace seconds to save; a second
    signal kills them); SIGUSR1: drain. A table that does not exist yet is waited for
    (--until-empty: exits 0, as for an empty table). A job whose data cannot be run (a table
    name that cannot be a directory) ends ERR_START; the worker goes on.

    \b
    Exit codes: 0 stopped, drained, empty or done; 1 database unreachable at start;
    2 bad options; 3 this machine cannot start jobs (see --max-env-failures and the
    state shown by `dbdict-worker status`)."""
    _hide_password_from_ps(db)
    # Until the supervisor's own handlers are in place (opening the store may wait a minute
    # for the database), a stop simply means: do not start.
    def stop_before_start(signum: int, frame: object) -> None:
        raise _StopBeforeStart()

    try:
        with handling(same_handler((signal.SIGTERM, signal.SIGINT), stop_before_start)):
            code = _start(db, tables, exproot, slots, gpus, max_jobs, until_empty, grace,
                          heartbeat, lease, workdir_base, poll_only, poll_interval,
                          env_failure_limit, walltime=walltime, min_remaining=min_remaining,
                          log_tail=log_tail)
    except _StopBeforeStart:
        logging.getLogger("dbdict_worker.worker").info("stopped before it started")
        code = 0
    sys.exit(code)


class _StopBeforeStart(Exception):
    """SIGTERM/SIGINT arrived before the worker had registered: nothing to clean up."""


def _start(db, tables, exproot, slots, gpus, max_jobs, until_empty, grace, heartbeat, lease,
           workdir_base, poll_only, poll_interval, env_failure_limit, walltime=None,
           min_remaining=None, log_tail=65536) -> int:
    from dbdict_worker.db.connect import retry_seconds_from_env
    from dbdict_worker.store import Store
    from dbdict_worker.worker import walltime as wallmod
    from dbdict_worker.worker.supervisor import Supervisor, WorkerConfig

    table_list = _split(tables) or _split((os.environ.get("DBDICT_TABLE", ""),))
    for name in table_list or ():
        check_table_name(name)
    gpu_list = _split((gpus,)) if gpus else None
    check_lease(lease, heartbeat)
    config = WorkerConfig(tables=table_list, exproot=exproot, slots=slots, gpus=gpu_list,
                          max_jobs=max_jobs, until_empty=until_empty, grace=grace,
                          heartbeat=heartbeat, lease=lease, workdir_base=workdir_base,
                          poll_only=poll_only, poll_interval=poll_interval,
                          env_failure_limit=env_failure_limit)
    end, config.min_remaining = wallmod.from_options(walltime, min_remaining)
    config.log_tail = log_tail
    store = Store.open(db, retry_seconds=retry_seconds_from_env(START_RETRY_SECONDS))
    config.walltime = wallmod.seconds_left(end)  # the wait for the database counts too
    supervisor = Supervisor(store, config)
    try:
        with supervisor.signals():
            return supervisor.run()
    finally:
        store.close()


@main.command(context_settings=CONTEXT)
@click.option("--worker", "worker_id", metavar="ID", help="Drain this worker.")
@click.option("--host", metavar="HOST", help="Drain every worker on this host.")
@click.option("--all", "all_", is_flag=True, help="Drain every running worker.")
@lease_option
@db_only_options
@handle_errors
def drain(worker_id, host, all_, lease, db, debug) -> None:
    """Ask workers to finish their current jobs, book nothing new, and exit 0. Works from
    any machine that reaches the database (locally, `kill -USR1 PID` does the same).
    Lost workers (no heartbeat for --lease seconds) are skipped: they cannot drain."""
    if sum(bool(x) for x in (worker_id, host, all_)) != 1:
        raise UsageError("give exactly one of --worker ID, --host HOST, --all")
    with open_store(db, None) as store:
        ids = store.request_drain(worker_id=worker_id, host=host, lease=lease)
        lost = store.lost_workers(lease, worker_id=worker_id, host=host)
    click.echo(drain_summary(ids, lost, lease))


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
@click.option("--all", "include_stopped", is_flag=True, help="Include stopped workers.")
@lease_option
@db_options
@handle_errors
def status(as_json, include_stopped, lease, db, table, debug) -> None:
    """Workers (id, host, pid, slots, state, heartbeat age, job ids) and job counts (of
    --table, or of all tables). A worker whose heartbeat is older than --lease is shown
    as lost (killed, or its machine gone); its jobs are requeued by the live workers."""
    with open_store(db, table) as store:
        rows = [mark_lost(w, lease) for w in store.workers(include_stopped=include_stopped)]
        counts = store.counts()
    totals: dict[str, int] = {}
    for (_, st), n in counts.items():
        totals[st.name] = totals.get(st.name, 0) + n
    if as_json:
        click.echo(json.dumps({
            "workers": [{"id": w.id, "host": w.host, "pid": w.pid, "slots": w.slots,
                         "state": w.state, "drain_requested": w.drain_requested,
                         "heartbeat_age": w.heartbeat_age, "tables": w.tables,
                         "jobs": list(w.job_ids)} for w in rows],
            "jobs": totals}, indent=1))
        return
    click.echo(f"{'worker':<36} {'pid':>7} {'slots':>5} {'state':<9} {'beat':>6}  jobs")
    for w in rows:
        age = f"{w.heartbeat_age:.0f}s" if w.heartbeat_age is not None else "?"
        # A state with a reason ("degraded: workdir base ... read-only") gets a line of its own.
        state, _, why = w.state.partition(": ")
        click.echo(f"{w.id[:36]:<36} {w.pid:>7} {w.slots:>5} {state:<9} {age:>6}  "
                   + " ".join(map(str, w.job_ids)))
        if why:
            click.echo(f"    {state}: {why}")
    if not rows:
        click.echo("(no workers)")
    click.echo("jobs: " + ", ".join(f"{s.name} {totals[s.name]}" for s in Status
                                    if s.name in totals) if totals else "jobs: none")


@main.command(context_settings={"ignore_unknown_options": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args) -> None:
    """Measure this installation against a database (`dbdict-worker bench --help`)."""
    from dbdict_worker.bench import command as benchmod

    sys.exit(benchmod.main(list(args), prog="dbdict-worker bench"))


if __name__ == "__main__":  # pragma: no cover (the password re-exec comes through here)
    main(prog_name="dbdict-worker")
