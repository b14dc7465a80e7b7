"""Records when it started (``started_at``, seconds since the epoch): pickup-latency probes."""
from __future__ import annotations

import time


def experiment(state, channel):
    """Stamp the start time and return COMPLETE."""
    state.started_at = time.time()
    return None
