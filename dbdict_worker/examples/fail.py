"""An experiment that raises (after ``steps`` saved steps, default 3): ERR_RUN."""
from __future__ import annotations


class ExperimentFailed(RuntimeError):
    """The deliberate failure."""


def experiment(state, channel):
    """Save a few steps, then raise."""
    state.setdefault("step", 0)
    for _ in range(state.get("steps", 3)):
        state.step += 1
        channel.save()
    raise ExperimentFailed(f"deliberate failure at step {state.step}")
