"""``dbdict wait``: block until the selected jobs have ended; the exit status says how.

Exit 0: every selected job ended DONE or PRUNED (or none is selected); 1: some failed
(ERR_*) or were cancelled; 124 (as timeout(1)): ``--timeout`` passed first; 2: a usage error. So
``dbdict wait -t sweep1 && make plots`` works in a script or a dependent SLURM job.
"""
from __future__ import annotations

import sys
from typing import IO, Any

import click

from dbdict_worker.cli.common import db_options, handle_errors, open_store, selection_args
from dbdict_worker.constants import Status
from dbdict_worker.durations import format_duration, parse_duration
from dbdict_worker.waiting import Progress, WaitResult

#: Exit status when ``--timeout`` passed with jobs still pending (as timeout(1)).
EXIT_TIMEOUT = 124
#: Exit status when a selected job failed or was cancelled.
EXIT_FAILED = 1


class Duration(click.ParamType):
    """A duration option: ``90``, ``90s``, ``15m``, ``6h``, ``1d``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _clock(seconds: float) -> str:
    """Seconds as ``1h02m``, ``5m12s`` or ``40s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def progress_text(p: Progress) -> str:
    """One look at the jobs, for people: ``12/40 ended (10 DONE, 2 ERR_RUN), 4 running,
    24 queued, ETA 5m12s``."""
    r = p.result
    ended = r.total - r.pending
    parts = [f"{ended}/{r.total} ended" + (f" ({r.describe()})" if ended else ""),
             f"{r.counts.get(Status.RUNNING, 0)} running",
             f"{r.counts.get(Status.START, 0)} queued"]
    parts.append(f"ETA {_clock(p.eta)}" if p.eta is not None else "ETA ?")
    return ", ".join(parts)


class Reporter:
    """Shows progress on ``out``: a line rewritten in place on a terminal, else one plain
    line every ``every`` seconds (and the first one at once)."""

    def __init__(self, out: IO[str], every: float, tty: bool | None = None) -> None:
        self.out = out
        self.every = every
        self.tty = out.isatty() if tty is None else tty
        self.next_line = 0.0
        self.width = 0

    def __call__(self, p: Progress) -> None:
        if self.tty:
            text = f"wait: {progress_text(p)}"
            self.out.write("\r" + text.ljust(self.width))
            self.width = len(text)
        elif p.elapsed >= self.next_line:
            self.next_line = p.elapsed + self.every
            self.out.write(f"wait: {progress_text(p)} [{_clock(p.elapsed)} elapsed]\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()


def summary(result: WaitResult, timeout: float | None) -> str:
    """The last line: what became of the jobs."""
    if result.timed_out:
        return (f"gave up after {format_duration(timeout or 0)}: {result.pending} of "
                f"{result.total} jobs not ended ({result.describe()})")
    if not result.total:
        return "no job selected: nothing to wait for"
    if result.ok:
        if result.counts.get(Status.PRUNED):
            return f"all {result.total} jobs ended ({result.describe()})"
        return f"all {result.total} jobs DONE"
    return f"{result.failed} of {result.total} jobs did not end DONE: {result.describe()}"


@click.command("wait", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--timeout", type=Duration(), metavar="DURATION",
              help="Give up after this long (90s, 15m, 6h, 1d): exit 124.")
@click.option("--every", type=Duration(), default="1m", show_default=True,
              metavar="DURATION",
              help="When not on a terminal, one progress line this often.")
@click.option("--quiet", "-q", is_flag=True, help="No progress, only the last line.")
@db_options
@handle_errors
def wait_command(timeout: float | None, every: float, quiet: bool, db: str | None,
                 table: str | None, debug: bool, where: tuple[str, ...] = (),
                 status: tuple[str, ...] = ()) -> None:
    """Wait until no selected job is START or RUNNING (one count every 2 s).

    Exit 0 if every selected job ended DONE or PRUNED (also when none is), 1 if any failed
    (ERR_*) or was cancelled, 124 if --timeout passed first, 2 on a usage error. Progress
    goes to stderr (a bar with an ETA on a terminal, else a line a minute); the last line,
    with the count of jobs per status, to stdout.

    \b
    Examples:
      dbdict wait -t sweep1 && python plots.py
      dbdict wait -t sweep1 --where lr=0.1 --timeout 6h
    """
    sel = selection_args((), where, status, table, need_one=False)
    reporter = None if quiet else Reporter(sys.stderr, every)
    with open_store(db, table) as store:
        try:
            result = store.wait(timeout=timeout, on_progress=reporter, **sel)
        finally:
            if reporter is not None:
                reporter.close()
    click.echo(summary(result, timeout))
    if result.timed_out:
        sys.exit(EXIT_TIMEOUT)
    if not result.ok:
        sys.exit(EXIT_FAILED)
