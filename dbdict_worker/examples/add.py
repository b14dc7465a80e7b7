"""``dbdict run dbdict_worker.examples.add first=1 second=2`` sets ``result = 3``."""
from __future__ import annotations

from dbdict_worker import COMPLETE


def experiment(state, channel):
    """Add two numbers (or concatenate two strings or lists)."""
    state.result = state.first + state.second
    print(f"{state.first!r} + {state.second!r} = {state.result!r}")
    return COMPLETE
