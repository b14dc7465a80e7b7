"""The resumable loop of the README's "Writing an experiment" section, with knobs for tests
and demos.

Parameters (all optional): ``total`` steps (default 1000), ``sleep`` seconds per step
(default 0), ``save_every`` steps between ``save_and_switch()`` calls (default 1).
Each start appends one line to ``starts.log`` in the workdir (so a resumed run can be seen),
and ``acc`` accumulates the step numbers, so a wrongly resumed run ends with another result.
"""
from __future__ import annotations

import os
import time

from dbdict_worker import COMPLETE, INCOMPLETE


def experiment(state, channel):
    """Count to ``total``, saving as it goes; return INCOMPLETE when asked to stop."""
    total = state.get("total", 1000)
    pause = state.get("sleep", 0)
    every = max(1, state.get("save_every", 1))
    state.setdefault("step", 0)
    state.setdefault("acc", 0)
    with open("starts.log", "a") as f:
        f.write(f"start at step {state.step} pid {os.getpid()}\n")
    while state.step < total:
        state.step += 1
        state.acc += state.step
        if pause:
            time.sleep(pause)
        if state.step % every == 0 and channel.save_and_switch() == "stop":
            print(f"stopping at step {state.step}")
            return INCOMPLETE  # resumed later, from state.step
    state.result = state.acc
    print(f"done: result {state.result}")
    return COMPLETE
