"""Does nothing: what the runner's per-job overhead is measured with."""
from __future__ import annotations


def experiment(state, channel):
    """Return COMPLETE at once."""
    return None
