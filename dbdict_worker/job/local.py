"""``dbdict run``: one experiment on this machine, no database (the original ``cmdline`` and
``filemerge``), through the same child process runner as the worker.

``channel.report(step, **metrics)`` is appended to ``metrics.csv`` in the workdir
(``step,key,value`` lines); nothing prunes a job run this way.

Exit codes of ``dbdict run``: 0 COMPLETE; 75 INCOMPLETE (it returned INCOMPLETE or was
stopped: the same command resumes it); 1 the experiment failed (ERR_RUN, ERR_START) or could
not be run; 2 usage error.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Sequence

from dbdict_worker import params as paramsmod
from dbdict_worker import signals
from dbdict_worker import state as statemod
from dbdict_worker.channel import STOP_SIGNALS
from dbdict_worker.constants import EXIT_INCOMPLETE, Status
from dbdict_worker.errors import DbdictError, UsageError
from dbdict_worker.job import cmdexp
from dbdict_worker.job.jobrun import JobRun, RunResult
from dbdict_worker.job.process import JobSpec, Outcome
from dbdict_worker.job.workdir import EXPERIMENT_KEY, WORKDIR_KEY, Workdir, default_name

EXIT_COMPLETE = 0
EXIT_FAILED = 1
DEFAULT_GRACE = 60.0
#: Where ``dbdict run`` writes the experiment's channel.report rows, in its workdir.
METRICS_FILE = "metrics.csv"


class Refused(DbdictError):
    """The workdir says the job is done or running (use --force)."""


@dataclass(frozen=True)
class LocalJob:
    """What ``dbdict run`` will run: the experiment, its parameters and where."""

    experiment: str
    params: dict[str, Any]
    workdir: Path
    temporary: bool = False


def parse_args(args: Sequence[str], files: Sequence[str], *, command: str | None = None,
               shell: bool = False) -> tuple[str, dict[str, Any]]:
    """(experiment, flat params) from ``[EXPERIMENT] [PARAM | FILE.conf]...`` and ``--file``.

    Files are merged in order, then inline parameters on top. An EXPERIMENT may be omitted
    when a file names one in ``dbdict.experiment`` (as every orig.conf does); other
    ``dbdict.*`` keys in files are ignored.
    """
    args = list(args)
    experiment: str | None = None
    if command is None and args and not paramsmod.is_conf(args[0]) and (
            not paramsmod.is_param(args[0]) or cmdexp.is_command(args[0])):
        experiment = args.pop(0)
    confs, inline = paramsmod.split(args)
    base: dict[str, Any] = {}
    for conf in paramsmod.read_confs([*files, *confs]):
        named = conf.get(EXPERIMENT_KEY)
        if isinstance(named, str):
            experiment = experiment or named
        base.update(statemod.user_keys(conf))
    (params,) = paramsmod.combinations(base, inline, single="dbdict run")
    statemod.flatten(params)  # a file key may conflict with an inline one ('a' and 'a.b')
    if command is not None:
        template = cmdexp.CommandTemplate.from_text(command, shell=shell)
        template.check([params])
        return template.encode(), params
    if experiment is None:
        raise UsageError("missing EXPERIMENT (a dotted path such as mypkg.train.run), or "
                         "--cmd, or a --file that names dbdict.experiment")
    if cmdexp.is_command(experiment):
        try:
            cmdexp.CommandTemplate.decode(experiment).check([params])
        except cmdexp.CommandError as e:
            raise UsageError(str(e)) from None
    else:
        statemod.check_experiment_path(experiment)
    return experiment, params


def plan(experiment: str, params: dict[str, Any], *, workdir: str | None = None,
         dry_run: bool = False, force: bool = False, cwd: str | None = None) -> LocalJob:
    """Choose the workdir and check that the job may run there (Refused, UsageError)."""
    if workdir and dry_run:
        raise UsageError("use only one of --workdir and --dry-run")
    if dry_run:
        return LocalJob(experiment, params, Path(tempfile.mkdtemp(prefix="dbdict-run-")),
                        temporary=True)
    base = Path(cwd or os.getcwd())
    path = Path(workdir) if workdir else base / default_name(experiment, params)
    wd = Workdir(base / path)
    orig = wd.read_orig()
    if orig is not None:
        before = orig.get(EXPERIMENT_KEY)
        if (before is not None and before != experiment) or statemod.canonical_json(
                statemod.user_keys(orig)) != statemod.canonical_json(params):
            raise UsageError(f"workdir {wd.path} holds a job with other parameters (see its "
                             f"orig.conf); choose another --workdir")
    status = wd.status()
    if status in (Status.DONE, Status.RUNNING) and not force:
        what = "is already done" if status == Status.DONE else \
            "is marked RUNNING (another run may be using it)"
        raise Refused(f"the job in {wd.path} {what} (current.conf); --force runs it anyway")
    return LocalJob(experiment, params, wd.path)


def forwarding_signals(run: JobRun) -> ContextManager[None]:
    """While inside, SIGTERM/SIGINT/SIGUSR2 ask ``run`` to stop (a second one kills)."""

    def handler(signum: int, frame: Any) -> None:
        run.request_stop()  # only bumps a counter: the run loop acts on it

    return signals.handling(signals.same_handler(STOP_SIGNALS, handler))


def run(job: LocalJob, *, redirect: bool = False, grace: float = DEFAULT_GRACE,
        save_interval: float | None = None, handle_signals: bool = True,
        timeout: float | None = None, stall_after: float | None = None) -> RunResult:
    """Run the job in a child process (within its time limits, seconds, None: none);
    removes a temporary workdir afterwards."""
    spec = JobSpec(job.experiment, job.params, workdir=job.workdir,
                   reserved={EXPERIMENT_KEY: job.experiment, WORKDIR_KEY: str(job.workdir)},
                   redirect=redirect, save_interval=save_interval,
                   python_path=[os.getcwd()], timeout=timeout, stall_after=stall_after)
    jobrun = JobRun(spec, grace=grace,
                    on_metrics=lambda rows: append_metrics(job.workdir / METRICS_FILE, rows))
    try:
        if handle_signals:
            with forwarding_signals(jobrun):
                return jobrun.run()
        return jobrun.run()
    finally:
        if job.temporary:
            shutil.rmtree(job.workdir, ignore_errors=True)


def append_metrics(path: Path, rows: Sequence[tuple[int, str, float]]) -> None:
    """Append reports to ``path`` as CSV (``step,key,value``; the header on a new file)."""
    import csv

    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        if new:
            out.writerow(["step", "key", "value"])
        out.writerows(rows)


def exit_code(outcome: Outcome) -> int:
    """0 COMPLETE, 75 INCOMPLETE (resumable), 1 anything else."""
    if outcome.status == Status.DONE:
        return EXIT_COMPLETE
    if outcome.status == Status.START:
        return EXIT_INCOMPLETE
    return EXIT_FAILED


def summary(job: LocalJob, outcome: Outcome) -> str:
    """The one line ``dbdict run`` prints on stderr at the end."""
    where = "" if job.temporary else f" (workdir {job.workdir})"
    if outcome.status == Status.DONE:
        return f"COMPLETE{where}"
    if outcome.status == Status.START:
        how = f": {outcome.error}" if outcome.error else ""
        return (f"INCOMPLETE{how}; state saved in current.conf, run the same command again to "
                f"resume{where}" if not job.temporary else f"INCOMPLETE{how}")
    detail = f"{outcome.status.name}: {outcome.error or 'failed'}"
    if not job.temporary and outcome.status == Status.ERR_RUN:
        detail += f" (traceback or output in {job.workdir / 'stderr'})"
    return detail
