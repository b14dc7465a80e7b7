"""Example experiments, runnable as they are (``dbdict help example`` shows how).

- :mod:`~dbdict_worker.examples.add`: ``result = first + second``.
- :mod:`~dbdict_worker.examples.loop`: the resumable loop of the README's "Writing an experiment" section.
- :mod:`~dbdict_worker.examples.checkpoint`: weights in a checkpoint file; raises when a resumed
  state and its files disagree.
- :mod:`~dbdict_worker.examples.fail`: raises.
- :mod:`~dbdict_worker.examples.flaky`: fails its first attempts, then completes (retries);
  :mod:`~dbdict_worker.examples.hang`: sleeps forever, silently; and
  :mod:`~dbdict_worker.examples.spin`: busy on the CPU, silently (time limits).
- :mod:`~dbdict_worker.examples.stubborn`: ignores 'stop' (killed after the grace period).
- :mod:`~dbdict_worker.examples.never_done`: returns INCOMPLETE, without progress (bounded
  restarts) or with it.
- :mod:`~dbdict_worker.examples.timed`: a resumable loop that records ``channel.time_left()``
  (and can return INCOMPLETE on its own when short of time).
- :mod:`~dbdict_worker.examples.regexp`: ``make(state.regexp)`` with ``regexp::re.compile``.
- :mod:`~dbdict_worker.examples.noop`, :mod:`~dbdict_worker.examples.crash`,
  :mod:`~dbdict_worker.examples.linger`, :mod:`~dbdict_worker.examples.shell_out`,
  :mod:`~dbdict_worker.examples.cmd_step` (a command experiment),
  :mod:`~dbdict_worker.examples.stamp`: for tests and benchmarks.
- :mod:`~dbdict_worker.examples.intervals`: logs when each copy of a job runs (at most one
  copy at a time is what the tests check).

The package binds each module's name to its ``experiment`` function, so the short dotted
path ``dbdict_worker.examples.add`` names the callable.
"""
from __future__ import annotations

from dbdict_worker.examples.add import experiment as add
from dbdict_worker.examples.checkpoint import experiment as checkpoint
from dbdict_worker.examples.crash import experiment as crash
from dbdict_worker.examples.fail import experiment as fail
from dbdict_worker.examples.flaky import experiment as flaky
from dbdict_worker.examples.hang import experiment as hang
from dbdict_worker.examples.spin import experiment as spin
from dbdict_worker.examples.intervals import experiment as intervals
from dbdict_worker.examples.linger import experiment as linger
from dbdict_worker.examples.loop import experiment as loop
from dbdict_worker.examples.never_done import experiment as never_done
from dbdict_worker.examples.noop import experiment as noop
from dbdict_worker.examples.regexp import experiment as regexp
from dbdict_worker.examples.shell_out import experiment as shell_out
from dbdict_worker.examples.stamp import experiment as stamp
from dbdict_worker.examples.stubborn import experiment as stubborn
from dbdict_worker.examples.timed import experiment as timed

__all__ = ["add", "checkpoint", "crash", "fail", "intervals", "linger", "loop", "never_done", "noop", "regexp",
           "shell_out", "stamp", "stubborn", "timed", "flaky", "hang", "spin"]
