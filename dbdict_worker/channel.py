"""The experiment's side of a job: ``channel.switch()``, ``channel.save()`` (the README's "The
channel" section).

An experiment calls these every iteration of its loop, so they must cost next to nothing:
``switch()`` reads a flag, ``save()`` marks the state dirty. The state itself is flattened,
checked, written to ``current.conf`` and sent to the parent (a *flush*) at most once every
``save_interval`` seconds. A save after a quiet period (the usual "save every epoch") is
flushed at once; one made sooner is superseded by the next save that is flushed (the first
after the interval, or any once a stop was asked), and the end writes the final state.

Only a save flushes: the experiment's contract is "write your files, then save", so the
files on disk belong to the state as it is at a save, not as it is at a later ``switch()``
(by then the experiment may have moved on from the files it last wrote).

Signal handlers (SIGTERM, SIGINT, SIGUSR2) only set a flag: ``switch()`` then returns
``'stop'``, and keeps returning it. A search's pruner asking to stop the job early sets
another (the worker's PRUNE message): ``switch()`` then returns ``'prune'``.

``report(step, **metrics)`` (intermediate metrics, the learning curve) is coalesced the same
way: only the latest value of each key since the last flush is kept, and the reports are sent
(a *metrics flush*) at most once every ``report_interval`` seconds, at every state flush, at a
stop or prune, and at the end.
"""
from __future__ import annotations

import signal
import time
import numbers
from typing import Any, Callable, Mapping

from dbdict_worker import signals
from dbdict_worker.constants import COMPLETE, INCOMPLETE
from dbdict_worker.durations import seconds_from_env
from dbdict_worker.errors import StateError

#: What switch() returns once a stop was asked.
STOP = "stop"
#: What switch() returns once a search's pruner asked to stop the job early (status PRUNED).
PRUNE = "prune"
#: Signals that ask a job to stop (SIGUSR2: SLURM's usual preemption warning): the experiment's
#: switch() then returns 'stop', and ``dbdict run`` passes them on to its job.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
DEFAULT_SAVE_INTERVAL = 1.0
SAVE_INTERVAL_ENV = "DBDICT_SAVE_INTERVAL"
DEFAULT_REPORT_INTERVAL = 1.0
REPORT_INTERVAL_ENV = "DBDICT_REPORT_INTERVAL"
#: The job's deadline in a job's environment (whole epoch seconds, for command experiments and
#: the programs an experiment starts): when it will be asked to stop. Unset: no limit.
DEADLINE_ENV = "DBDICT_DEADLINE"

#: Called with the experiment's state on each flush; persists it (current.conf, the parent).
Sink = Callable[[Mapping[str, Any]], None]
#: Called with the reports of a metrics flush: ``[[step, key, value], ...]``.
MetricsSink = Callable[[list], None]


def save_interval_from_env(default: float = DEFAULT_SAVE_INTERVAL) -> float:
    """``DBDICT_SAVE_INTERVAL`` seconds (>= 0), or ``default`` when unset or malformed."""
    return seconds_from_env(SAVE_INTERVAL_ENV, default)


def report_interval_from_env(default: float = DEFAULT_REPORT_INTERVAL) -> float:
    """``DBDICT_REPORT_INTERVAL`` seconds (>= 0), or ``default`` when unset or malformed."""
    return seconds_from_env(REPORT_INTERVAL_ENV, default)


def _number(key: str, value: Any) -> float:
    """A reported value as a float (int, bool, numpy scalars...); StateError otherwise."""
    if isinstance(value, numbers.Real):
        return float(value)
    raise StateError(f"channel.report: metric {key!r} is a {type(value).__name__} "
                     f"({value!r:.80}); report numbers only (int, float or bool)")


def set_deadline_env(env: dict[str, str], deadline: float | None) -> None:
    """Put ``deadline`` (an epoch, rounded down) in ``env`` as DEADLINE_ENV, or remove a
    value inherited from elsewhere when there is none."""
    if deadline is None:
        env.pop(DEADLINE_ENV, None)
    else:
        env[DEADLINE_ENV] = str(int(deadline))


class Channel:
    """What an experiment talks to: ``switch()``/``channel()``, ``save()``, ``save_and_switch()``,
    ``report()``, ``should_prune()``.

    ``sink`` persists a flushed state (the runner's writes current.conf and tells the parent);
    without one (an experiment called in-process, in a notebook or a unit test) saves are
    no-ops. ``metrics_sink`` receives flushed reports (without one they are dropped at each
    flush). ``clock`` is injectable for tests. ``deadline`` (time.time() epoch; None: no
    limit) is when the job will be asked to stop: see :meth:`time_left`.
    """

    COMPLETE = COMPLETE
    INCOMPLETE = INCOMPLETE

    def __init__(self, state: Any, *, sink: Sink | None = None,
                 save_interval: float = DEFAULT_SAVE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 deadline: float | None = None,
                 metrics_sink: MetricsSink | None = None,
                 report_interval: float = DEFAULT_REPORT_INTERVAL) -> None:
        self.state = state
        #: When the job will be asked to stop (epoch; the runner sets it); None: no limit.
        self.deadline = deadline
        self.save_interval = float(save_interval)
        #: Persists a flushed state; may be set after construction.
        self.sink = sink
        self._clock = clock
        self._stop = False
        self._prune = False
        # -inf: the first save is flushed at once, whatever the clock's origin.
        self._last_flush = float("-inf")
        self.report_interval = float(report_interval)
        #: Receives the reports of a metrics flush; may be set after construction.
        self.metrics_sink = metrics_sink
        # key -> (step, value): the latest report of each key since the last metrics flush.
        self._metrics: dict[str, tuple[int, float]] = {}
        self._last_report_flush = float("-inf")
        self._previous_handlers: dict[int, Any] = {}

    # --- what experiments call ---------------------------------------------------------------

    def switch(self, message: Any = None) -> str | None:
        """Return None; ``'stop'`` once a stop was asked (then save and return INCOMPLETE);
        ``'prune'`` once a search's pruner asked to end the job early (then return: the job
        ends PRUNED, its state and files kept).

        Never flushes the state: it may have moved on from the files of the last save.
        ``message`` is accepted for compatibility with the original protocol and ignored.
        """
        if self._stop or self._prune:
            if self._metrics:
                self.flush_metrics()
            return PRUNE if self._prune else STOP
        return None

    __call__ = switch

    def should_prune(self) -> bool:
        """True once a search's pruner asked to end this job early (``switch()`` says
        ``'prune'``); the experiment then returns, whatever it returns."""
        return self._prune

    def report(self, step: int, **metrics: float) -> None:
        """Report intermediate metrics at ``step`` (an int >= 0: an epoch, an iteration):
        ``channel.report(epoch, loss=0.31, acc=0.9)``. Numbers only. Coalesced: only the
        latest value of each key since the last flush is sent, at most every
        ``report_interval`` seconds (and at each save, stop and at the end)."""
        if type(step) is not int:
            if isinstance(step, bool) or not isinstance(step, numbers.Integral):
                raise StateError(f"channel.report: step must be an int, not "
                                 f"{type(step).__name__} ({step!r:.80})")
            step = int(step)
        if step < 0:
            raise StateError(f"channel.report: step must be >= 0, not {step}")
        pending = self._metrics
        for key, value in metrics.items():
            # The common case (a float) costs one type check; anything else is converted
            # or refused, naming the key.
            pending[key] = (step, value if type(value) is float else _number(key, value))
        if self._clock() - self._last_report_flush >= self.report_interval:
            self.flush_metrics()

    def time_left(self) -> float | None:
        """Seconds until this job is asked to stop (its worker's walltime, or its own
        --timeout, whichever comes first; 0 once past), or None without a limit. After the
        stop, the grace period is still there to save and return INCOMPLETE."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.time())

    def save(self) -> None:
        """Persist the state (the files written so far belong to it): now if the last flush
        is ``save_interval`` old or a stop was asked, else at a later save or the end."""
        if self._stop or self._clock() - self._last_flush >= self.save_interval:
            self.flush()

    def save_and_switch(self) -> str | None:
        """``save()`` then ``switch()``; returns what switch returns."""
        # Inlined (one clock read instead of two): this is the call of the tightest loops.
        if self._stop or self._prune:
            # The experiment may be killed soon after this: this save is written now.
            self.flush()
            return PRUNE if self._prune else STOP
        if self._clock() - self._last_flush >= self.save_interval:
            self.flush()
        return None

    # --- what the runner calls ---------------------------------------------------------------

    @property
    def stop_requested(self) -> bool:
        """True once a stop signal arrived (or :meth:`request_stop` was called)."""
        return self._stop

    def request_stop(self) -> None:
        """Make switch() return 'stop' from now on (safe in a signal handler: sets a flag)."""
        self._stop = True

    @property
    def prune_requested(self) -> bool:
        """True once :meth:`request_prune` was called."""
        return self._prune

    def request_prune(self) -> None:
        """Make switch() return 'prune' from now on (sets a flag; any thread)."""
        self._prune = True

    def flush_metrics(self) -> None:
        """Send the pending reports now (``[[step, key, value], ...]``) through the metrics
        sink, and start a new interval."""
        self._last_report_flush = self._clock()
        if not self._metrics:
            return
        pending, self._metrics = self._metrics, {}
        if self.metrics_sink is not None:
            self.metrics_sink([[step, key, value] for key, (step, value) in pending.items()])

    def flush(self) -> None:
        """Persist the state now through the sink (raises StateError on an unstorable value);
        the pending reports go first."""
        if self._metrics:
            self.flush_metrics()
        self._last_flush = self._clock()
        if self.sink is not None:
            self.sink(self.state)

    def install_signal_handlers(self) -> None:
        """SIGTERM, SIGINT and SIGUSR2 make switch() return 'stop' (main thread only)."""
        self._previous_handlers.update(
            signals.install(signals.same_handler(STOP_SIGNALS, self._on_signal)))

    def restore_signal_handlers(self) -> None:
        """Put back the handlers that install_signal_handlers replaced."""
        signals.restore(self._previous_handlers)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: almost nothing is safe inside a signal handler, so the experiment acts
        # on it at its next switch().
        self._stop = True

    def __enter__(self) -> "Channel":
        self.install_signal_handlers()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore_signal_handlers()
