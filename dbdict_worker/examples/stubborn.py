"""An experiment that ignores 'stop': it keeps stepping and saving until it is killed.

Parameters: ``total`` steps (default 10**9), ``sleep`` per step (default 0.01). ``stops``
counts how many steps saw 'stop', so a test can tell it was asked.
"""
from __future__ import annotations

import time

from dbdict_worker import COMPLETE


def experiment(state, channel):
    """Step forever, saving every step, whatever switch() says."""
    state.setdefault("step", 0)
    state.setdefault("stops", 0)
    while state.step < state.get("total", 10**9):
        state.step += 1
        if channel.save_and_switch() == "stop":
            state.stops += 1
        time.sleep(state.get("sleep", 0.01))
    return COMPLETE
