"""``dbdict-enqueue``'s retry and time-limit options (``--retries``, ``--retry-on``,
``--retry-delay``, ``--timeout``, ``--stall-after``), kept in the click context so that the
command's signature does not change; :func:`enqueue_policy` gives them as the ``policy`` of
``Store.enqueue`` (checked by :func:`dbdict_worker.retrying.check_policy`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import click

from dbdict_worker import retrying
from dbdict_worker.constants import DEFAULT_RETRY_DELAY, RETRY_CLASSES
from dbdict_worker.durations import format_duration, parse_duration

if TYPE_CHECKING:  # the options need no database code
    from dbdict_worker.db.models import Job

_META = "dbdict_worker.cli.policy"
_DURATIONS = ("retry_delay", "timeout", "stall_after")


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None:
        return
    if param.name in _DURATIONS:
        try:
            value = parse_duration(value)
        except ValueError as e:
            raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    ctx.meta.setdefault(_META, {})[param.name] = value


def _option(*names: str, **kw: Any) -> Callable[[Callable], Callable]:
    return click.option(*names, expose_value=False, callback=_remember, **kw)


_OPTIONS = [
    _option("--retries", type=click.IntRange(min=0), metavar="N",
            help="Retry a failed attempt up to N times in all, for the failure classes of "
                 "--retry-on; then the last attempt's status and error stand. Default: 0 "
                 "(only lost jobs come back, up to --max-attempts)."),
    _option("--retry-on", metavar="CLASSES",
            help=f"Comma-separated failure classes to retry ({', '.join(RETRY_CLASSES)}): "
                 "error = the experiment raised, exited non-zero or was killed; timeout = "
                 "--timeout or --stall-after; sync = the copy back to the exproot failed; "
                 "lost = its worker vanished more than --max-attempts times. Default with "
                 f"--retries: {','.join(retrying.DEFAULT_RETRY_ON)}."),
    _option("--retry-delay", metavar="DURATION",
            help="Wait before the first retry (90, 90s, 15m, 6h, 1d); doubled for each "
                 "next one, at most 1h, each +-20%. Default: 60s."),
    _option("--timeout", metavar="DURATION",
            help="Wall time of one attempt (such as 6h): then SIGTERM, the worker's grace "
                 "period, SIGKILL, and ERR_RUN 'timeout after 6h' (retried if --retry-on "
                 "has timeout)."),
    _option("--stall-after", metavar="DURATION",
            help="A hang: no save, no output to stdout/stderr and no CPU time for this "
                 "long (such as 15m); stopped and failed like --timeout."),
]


#: ``dbdict run``'s: the time limits alone (the same options, said for one local run).
_LIMIT_OPTIONS = [
    _option("--timeout", metavar="DURATION",
            help="Stop the experiment after this long (such as 30m): SIGTERM, --grace, "
                 "SIGKILL; it then fails (exit 1) with 'timeout after 30m'."),
    _option("--stall-after", metavar="DURATION",
            help="Stop it the same way after this long without a save, output or CPU time "
                 "(a hang)."),
]


def limit_options(f: Callable) -> Callable:
    """``--timeout`` and ``--stall-after`` (``dbdict run``); :func:`limits_given` reads them."""
    for option in reversed(_LIMIT_OPTIONS):
        f = option(f)
    return f


def limits_given() -> dict[str, float | None]:
    """``timeout`` and ``stall_after`` (seconds, None when not given), checked."""
    ctx = click.get_current_context(silent=True)
    given = dict(ctx.meta.get(_META, {})) if ctx is not None else {}
    checked = retrying.check_policy({k: given.get(k) for k in ("timeout", "stall_after")})
    return {"timeout": checked["timeout"], "stall_after": checked["stall_after"]}


def policy_options(f: Callable) -> Callable:
    """The five options, in this order on ``--help``."""
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


def enqueue_policy() -> dict[str, Any]:
    """The ``policy`` of ``Store.enqueue`` from the options given (checked: UsageError)."""
    ctx = click.get_current_context(silent=True)
    given = dict(ctx.meta.get(_META, {})) if ctx is not None else {}
    return retrying.check_policy(given)


def policy_lines(job: "Job") -> list[str]:
    """``dbdict show``'s lines for the job's retries and time limits (none when unset)."""
    lines = []
    if job.retries:
        base = DEFAULT_RETRY_DELAY if job.retry_delay is None else job.retry_delay
        lines.append(f"retries: {job.retried} of {job.retries} used (on {job.retry_on}; "
                     f"first delay {format_duration(base)})")
    limits = [f"{name} {format_duration(value)}" for name, value in
              (("timeout", job.timeout), ("stall after", job.stall_after)) if value is not None]
    if limits:
        lines.append(f"time limits: {', '.join(limits)} per attempt")
    return lines


def policy_record(job: "Job") -> dict[str, Any]:
    """The same for ``dbdict show --json`` (durations in seconds, None when unset)."""
    return {"retries": job.retries, "retried": job.retried, "retry_on": job.retry_on,
            "retry_delay": job.retry_delay, "timeout": job.timeout,
            "stall_after": job.stall_after}
