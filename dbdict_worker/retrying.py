"""Retries of failed attempts: a job's retry policy, checked at enqueue, and the decision
after a failure (the README's "Retries").

A job enqueued with ``retries`` N and ``retry_on`` classes gets up to N more attempts when an
attempt fails in a listed class (:data:`~dbdict_worker.constants.RETRY_CLASSES`):

- ``error``: the experiment raised, exited non-zero or died of a signal we did not send
  (ERR_RUN);
- ``timeout``: it passed its ``--timeout`` or hung past ``--stall-after``
  (:mod:`dbdict_worker.job.limits`);
- ``sync``: its workdir could not be copied back to the exproot (ERR_SYNC);
- ``lost``: its worker vanished. Losses are always retried up to ``max_attempts`` (a vanished
  worker is never the experiment's fault), listed or not; with ``lost`` listed, a loss past
  ``max_attempts`` also takes a retry from the budget instead of ending ERR_RUN.

Each retry waits ``retry_delay`` (default :data:`~dbdict_worker.constants.DEFAULT_RETRY_DELAY`)
doubled per retry already used, at most :data:`RETRY_DELAY_CAP` (or the base when it is
larger), each scaled by a random factor in 1 ± :data:`JITTER`. When the budget is used up the
attempt's own status and error stand. Without ``retries`` nothing changes from before: losses
retried up to ``max_attempts``, other failures final.

This module knows no database and no process: the queue (lost jobs) and the worker (its
attempts' outcomes) both ask it.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Iterable, Mapping

from dbdict_worker.backoff import doubling
from dbdict_worker.constants import DEFAULT_RETRY_DELAY, RETRY_CLASSES
from dbdict_worker.durations import parse_duration
from dbdict_worker.errors import UsageError

#: The classes retried when ``retries`` is given without ``retry_on``: the experiment's own
#: failures and its time limits (losses are retried up to max_attempts anyway; a failed copy
#: to the exproot is the cluster's business, listed only on request).
DEFAULT_RETRY_ON = ("error", "timeout")
#: Retry delays stop doubling here (seconds), unless the base itself is larger.
RETRY_DELAY_CAP = 3600.0
#: Each delay is scaled by a random factor in 1 ± JITTER.
JITTER = 0.2


def parse_retry_on(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The classes in ``value`` (comma-separated text or a sequence), in
    :data:`RETRY_CLASSES` order, without repeats; UsageError naming an unknown one."""
    if value is None:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    wanted = {str(n).strip().lower() for n in names} - {""}
    unknown = sorted(wanted - set(RETRY_CLASSES))
    if unknown:
        raise UsageError(f"--retry-on: unknown failure class {unknown[0]!r} "
                         f"(one or more of: {', '.join(RETRY_CLASSES)})")
    if not wanted:
        raise UsageError(f"--retry-on: name one or more of: {', '.join(RETRY_CLASSES)}")
    return tuple(c for c in RETRY_CLASSES if c in wanted)


def _seconds(name: str, value: Any, *, positive: bool) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise UsageError(f"--{name.replace('_', '-')}: {e}") from None
    if positive and seconds <= 0:
        raise UsageError(f"--{name.replace('_', '-')}: must be more than 0")
    return seconds


def check_policy(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """A job policy (``retries``, ``retry_on``, ``retry_delay``, ``timeout``,
    ``stall_after``; other keys pass through) checked and in stored form: ``retry_on`` as
    comma text (:data:`DEFAULT_RETRY_ON` when ``retries`` is given alone), durations as
    seconds (numbers, or text such as ``"15m"``). UsageError (one line) for a bad value."""
    out = dict(policy or {})
    retries = out.get("retries") or 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UsageError(f"--retries: expected a whole number >= 0, not {retries!r}")
    out["retries"] = retries
    classes = parse_retry_on(out.get("retry_on"))
    if classes and not retries:
        raise UsageError("--retry-on needs --retries N (how many retries a job may use)")
    if retries and not classes:
        classes = DEFAULT_RETRY_ON
    out["retry_on"] = ",".join(classes) if classes else None
    if "retry_delay" in out:
        out["retry_delay"] = _seconds("retry_delay", out["retry_delay"], positive=False)
        if out["retry_delay"] is not None and not retries:
            raise UsageError("--retry-delay needs --retries N (how many retries a job may use)")
    for key in ("timeout", "stall_after"):
        if key in out:
            out[key] = _seconds(key, out[key], positive=True)
    return out


def retry_delay(n: int, base: float | None, rand: Callable[[], float] = random.random) -> float:
    """The delay before retry ``n`` (n >= 1) with ``base`` seconds for the first (None:
    :data:`DEFAULT_RETRY_DELAY`); see the module docstring."""
    base = DEFAULT_RETRY_DELAY if base is None else float(base)
    return doubling(n, base, max(base, RETRY_DELAY_CAP), jitter=JITTER, rand=rand)


@dataclasses.dataclass(frozen=True)
class Retry:
    """One retry granted: retry number ``n`` of a budget of ``of``, after ``delay`` seconds."""

    n: int
    of: int
    delay: float

    def describe(self) -> str:
        """``retry 1 of 3 in 61.2 s``."""
        return f"retry {self.n} of {self.of} in {self.delay:.3g} s"


def next_retry(failure: str, *, retries: int, retried: int, retry_on: str | None,
               retry_delay_base: float | None,
               rand: Callable[[], float] = random.random) -> Retry | None:
    """The retry a job gets after a failure of class ``failure`` (one of
    :data:`RETRY_CLASSES`), given its policy and the ``retried`` count already used; None
    when the class is not listed or the budget is used up."""
    if failure not in RETRY_CLASSES:
        raise ValueError(f"not a failure class: {failure!r}")
    if retried >= retries or failure not in parse_retry_on(retry_on):
        return None
    n = retried + 1
    return Retry(n, retries, retry_delay(n, retry_delay_base, rand))


__all__ = ["DEFAULT_RETRY_ON", "RETRY_DELAY_CAP", "JITTER", "Retry", "check_policy",
           "parse_retry_on", "retry_delay", "next_retry"]
