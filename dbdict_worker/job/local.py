"""``dbdict run``: one experiment on this machine, no database (the original ``cmdline`` and
``filemerge``), through the same child process runner as the worker.

Exit codes of ``dbdict run``: 0 COMPLETE; 75 INCOMPLETE (it returned INCOMPLETE or was
stopped: the same command resumes it); 1 the experiment failed (ERR_RUN, ERR_START) or could
not be run; 2 usage error.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from dbdict_worker.job import cmdexp
from dbdict_worker import state as statemod
from dbdict_worker.constants import Status
from dbdict_worker.errors import DbdictError, UsageError
from dbdict_worker.job.jobrun import JobRun, RunResult
from dbdict_worker.job.process import JobSpec, Outcome
from dbdict_worker.sweeps import expand_braces
from dbdict_worker.job.workdir import Workdir, default_name, is_reserved

EXIT_COMPLETE = 0
EXIT_FAILED = 1
EXIT_INCOMPLETE = 75
DEFAULT_GRACE = 60.0
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+\Z")
#: Signals that `dbdict run` turns into a stop of its job (the second one kills it).
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class Refused(DbdictError):
    """The workdir says the job is done or running (use --force)."""


@dataclass(frozen=True)
class LocalJob:
    """What ``dbdict run`` will run: the experiment, its parameters and where."""

    experiment: str
    params: dict[str, Any]
    workdir: Path
    temporary: bool = False


def _is_param(arg: str) -> bool:
    return "=" in arg or "::" in arg


def _is_conf(arg: str) -> bool:
    return arg.endswith(".conf") and not _is_param(arg)


def parse_args(args: Sequence[str], files: Sequence[str], *, command: str | None = None,
               shell: bool = False) -> tuple[str, dict[str, Any]]:
    """(experiment, flat params) from ``[EXPERIMENT] [PARAM | FILE.conf]...`` and ``--file``.

    Files are merged in order, then inline parameters on top. An EXPERIMENT may be omitted
    when a file names one in ``dbdict.experiment`` (as every orig.conf does); other
    ``dbdict.*`` keys in files are ignored.
    """
    args = list(args)
    experiment: str | None = None
    if command is None and args and not _is_conf(args[0]) and (
            not _is_param(args[0]) or cmdexp.is_command(args[0])):
        experiment = args.pop(0)
    confs = list(files) + [a for a in args if _is_conf(a)]
    inline = [a for a in args if not _is_conf(a)]
    params: dict[str, Any] = {}
    for path in confs:
        if not os.path.isfile(path):
            raise UsageError(f"no such .conf file: {path}")
        for key, value in statemod.read_conf(path).items():
            if key == "dbdict.experiment" and isinstance(value, str):
                experiment = experiment or value
            elif not is_reserved(key):
                params[key] = value
    combos = expand_braces(inline)
    if len(combos) > 1:
        raise UsageError("dbdict run runs one job: {{...}} sweeps are for dbdict-enqueue")
    params.update(statemod.parse_params(combos[0] if combos else []))
    statemod.check_user_keys(params)
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
    elif not _DOTTED.match(experiment):
        raise UsageError(f"experiment must be a dotted path such as mypkg.train.run, got "
                         f"{experiment!r}")
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
        before = orig.get("dbdict.experiment")
        if (before is not None and before != experiment) or statemod.canonical_json(
                {k: v for k, v in orig.items() if not is_reserved(k)}) != \
                statemod.canonical_json(params):
            raise UsageError(f"workdir {wd.path} holds a job with other parameters (see its "
                             f"orig.conf); choose another --workdir")
    status = wd.status()
    if status in (Status.DONE, Status.RUNNING) and not force:
        what = "is already done" if status == Status.DONE else \
            "is marked RUNNING (another run may be using it)"
        raise Refused(f"the job in {wd.path} {what} (current.conf); --force runs it anyway")
    return LocalJob(experiment, params, wd.path)


@contextmanager
def forwarding_signals(run: JobRun) -> Iterator[None]:
    """While inside, SIGTERM/SIGINT/SIGUSR2 ask ``run`` to stop (a second one kills)."""
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        run.request_stop()  # only bumps a counter: the run loop acts on it

    try:
        for sig in FORWARDED:
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(job: LocalJob, *, redirect: bool = False, grace: float = DEFAULT_GRACE,
        save_interval: float | None = None, handle_signals: bool = True) -> RunResult:
    """Run the job in a child process; removes a temporary workdir afterwards."""
    spec = JobSpec(job.experiment, job.params, workdir=job.workdir,
                   reserved={"dbdict.experiment": job.experiment,
                             "dbdict.workdir": str(job.workdir)},
                   redirect=redirect, save_interval=save_interval,
                   python_path=[os.getcwd()])
    jobrun = JobRun(spec, grace=grace)
    try:
        if handle_signals:
            with forwarding_signals(jobrun):
                return jobrun.run()
        return jobrun.run()
    finally:
        if job.temporary:
            shutil.rmtree(job.workdir, ignore_errors=True)


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
