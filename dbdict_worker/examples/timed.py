"""A resumable loop that knows its time limit (the README's "Walltime-aware workers" section):
``channel.time_left()`` is how long it has before it is asked to stop (its worker's walltime,
or its own ``--timeout``), None without a limit.

Parameters (all optional): ``total`` steps (default 1000), ``sleep`` seconds per step
(default 0.1), ``reserve`` seconds: with a limit, once less than this is left the job saves
and returns INCOMPLETE on its own, between two steps, instead of waiting for the stop
(default 0: it waits for the stop, and saves then).

Each start records what it saw: ``starts`` (how many), ``left_at_start`` (time_left() at that
start, None without a limit) and ``step_at_start``.
"""
from __future__ import annotations

import time

from dbdict_worker import COMPLETE, INCOMPLETE


def experiment(state, channel):
    """Count to ``total``, saving every step; INCOMPLETE when stopped or short of time."""
    total = state.get("total", 1000)
    pause = state.get("sleep", 0.1)
    reserve = state.get("reserve", 0)
    state.setdefault("step", 0)
    state.starts = state.get("starts", 0) + 1
    left = channel.time_left()
    state.left_at_start = None if left is None else round(left, 3)
    state.step_at_start = state.step
    while state.step < total:
        left = channel.time_left()
        if reserve and left is not None and left < reserve:
            return INCOMPLETE  # its state is saved with it: resumed later, from state.step
        state.step += 1
        if pause:
            time.sleep(pause)
        if channel.save_and_switch() == "stop":
            return INCOMPLETE  # resumed later, from state.step
    state.result = state.step
    return COMPLETE
