"""An experiment busy on the CPU without a save or a line of output for ``seconds``
(default 3), then COMPLETE with ``result`` (loop iterations): busy is not stalled."""
from __future__ import annotations

import time


def experiment(state, channel):
    """Spin for ``seconds`` of wall time, silently."""
    end = time.monotonic() + state.get("seconds", 3)
    n = 0
    while time.monotonic() < end:
        n += 1
    state.result = n
