"""An experiment that hangs: no save, no output, no CPU time, until it is killed (it ignores
'stop' as well: only SIGKILL ends it). For ``--stall-after`` and ``--timeout``.

Parameter: ``forever`` (default True); with False it sleeps ``seconds`` (default 1) and
completes, so a test can tell a hang from a slow start.
"""
from __future__ import annotations

import time


def experiment(state, channel):
    """Sleep: forever, or ``seconds`` when ``forever`` is False."""
    if not state.get("forever", True):
        time.sleep(state.get("seconds", 1))
        return None
    while True:
        time.sleep(3600)
