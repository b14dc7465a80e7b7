"""``dbdict logs ID [--attempt N] [--stderr] [-f]``: the tail of a job's output that its
worker keeps in the database (``dbdict-worker start --log-tail``), from any machine that
reaches the database; and the stderr excerpt ``dbdict show`` prints for a failed job."""
from __future__ import annotations

import os
import sys
import time

import click

from dbdict_worker.cli.common import db_only_options, handle_errors, open_store
from dbdict_worker.constants import PENDING
from dbdict_worker.errors import UsageError
from dbdict_worker.job.logtail import new_part

CONTEXT = {"help_option_names": ["-h", "--help"]}
#: Seconds between two looks at the database while following.
POLL = 1.0
#: Lines of the stderr tail ``dbdict show`` prints for a failed job.
SHOW_LINES = 15
_LIVE = PENDING


@click.command("logs", context_settings=CONTEXT)
@click.argument("job_id", type=int)
@click.option("--attempt", "-a", type=click.IntRange(min=1), metavar="N",
              help="This attempt's output (default: the latest attempt).")
@click.option("--stderr", "use_stderr", is_flag=True, help="Standard error instead of "
                                                           "standard output.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new output while the job runs (it arrives once per worker "
                   "heartbeat), go on with the next attempt if the job is requeued and runs "
                   "again, and exit 0 once the job has ended.")
@db_only_options
@handle_errors
def logs_command(job_id: int, attempt: int | None, use_stderr: bool, follow: bool,
                 db: str | None, debug: bool) -> None:
    """Print the tail of a job's output, from the database (no ssh to its node).

    JOB_ID's standard output (or --stderr): its workers keep the last 64 KB of each attempt
    (`dbdict-worker start --log-tail`), while it runs and when it ends. The whole output
    stays in the job's workdir (files stdout and stderr)."""
    stream = "stderr" if use_stderr else "stdout"
    with open_store(db, None) as store:
        job, _ = store.job(job_id)
        if attempt is not None and attempt > job.attempts and job.status not in _LIVE:
            raise UsageError(f"job {job_id} has had {job.attempts} attempt(s), not {attempt}")
        if follow:
            try:
                _follow(store, job_id, attempt, stream)
            except KeyboardInterrupt:  # Ctrl-C is how one stops following: no message
                sys.exit(130)
            return
        current = attempt or job.attempts
        row = _row(store, job_id, current, stream) if current else None
        if row is None or row.size == 0:
            click.echo(_nothing(job, current, stream), err=True)
            return
        _show(row, 0)


def _row(store, job_id: int, attempt: int, stream: str):
    """The kept tail of one stream of one attempt, or None."""
    for row in store.log_tails(job_id, attempt):
        if row.stream == stream:
            return row
    return None


def _nothing(job, attempt: int, stream: str) -> str:
    if job.status in _LIVE or not attempt:
        return f"job {job.id} has no logs yet (status {job.status.name})"
    return (f"job {job.id} has no {stream} kept for attempt {attempt} (status "
            f"{job.status.name}): it wrote nothing there, or its worker keeps none "
            f"(--log-tail 0)")


def _show(row, shown: int) -> int:
    """Print what ``row`` holds past the first ``shown`` bytes; returns the bytes shown now."""
    data, lost = new_part(row.tail, row.size, shown)
    if lost:
        click.echo(f"[... {lost} bytes not kept ...]", err=True)
    if data:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        except BrokenPipeError:  # `dbdict logs 7 | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
    return max(row.size, shown)


def _follow(store, job_id: int, fixed: int | None, stream: str) -> None:
    """Print new output of the attempt followed every POLL seconds; move on to the next
    attempt (unless ``fixed``); return once the job (or the fixed attempt) has ended."""
    attempt, shown, waiting_said = fixed, 0, False
    while True:
        # The job first, its output second: a worker writes an attempt's final tail before
        # the status that ends it, so an end seen here comes with the whole tail.
        job, _ = store.job(job_id)
        if attempt is None and job.attempts:
            attempt = job.attempts
        if attempt is None or attempt > job.attempts:
            if job.status not in _LIVE:  # ended without (that many) attempts
                click.echo(_nothing(job, 0, stream), err=True)
                return
            if not waiting_said:
                click.echo(f"job {job_id} has no logs yet (status {job.status.name}): "
                           "waiting for it to run", err=True)
                waiting_said = True
        else:
            row = _row(store, job_id, attempt, stream)
            if row is not None:
                shown = _show(row, shown)
            if attempt < job.attempts:  # requeued and booked again
                if fixed is not None:
                    return
                attempt, shown = job.attempts, 0
                click.echo(f"[... attempt {attempt} ...]", err=True)
                continue
            if job.status not in _LIVE:
                return
        time.sleep(POLL)


def stderr_excerpt(store, job, lines: int = SHOW_LINES) -> list[str]:
    """For a failed job (ERR_*), the last ``lines`` lines of its latest attempt's kept
    stderr (the traceback, usually), headed by a line saying what they are; else []."""
    if not job.status.name.startswith("ERR_") or not job.attempts:
        return []
    row = _row(store, job.id, job.attempts, "stderr")
    if row is None or not row.tail.strip():
        return []
    tail = row.tail.rstrip("\n").split("\n")[-lines:]
    return [f"stderr of attempt {job.attempts}, last {len(tail)} line(s) "
            f"(dbdict logs {job.id} --stderr):"] + [f"  {line}" for line in tail]
