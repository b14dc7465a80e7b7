"""Synthetic experiments with a known optimum, for the search's tests and figures.

``branin``: Branin on x in [-5, 10], y in [0, 15] (minimum 0.397887). ``quad6``: a
6-parameter quadratic with a categorical (minimum 0 at a=..f=0.3 with kind='b'). ``curve``:
a learning curve over ``steps`` steps reported with ``channel.report``; bad configurations
plateau high; it stops when the pruner asks.
"""
from __future__ import annotations

import math
import time

from dbdict_worker import COMPLETE, INCOMPLETE

BRANIN_MIN = 0.397887
QUAD_OFFSET = {"a": 0.0, "b": 0.5, "c": 1.0}


def branin_value(x: float, y: float) -> float:
    b, c, r, s, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return (y - b * x * x + c * x - r) ** 2 + s * (1 - t) * math.cos(x) + s


def branin(state, channel):
    """Branin of state.x, state.y into state.value (after ``state.delay`` seconds)."""
    time.sleep(float(state.get("delay", 0)))
    state.value = branin_value(float(state.x), float(state.y))
    return COMPLETE


def quad6(state, channel):
    """sum (p_i - 0.3)^2 over p1..p6, plus an offset by state.kind."""
    time.sleep(float(state.get("delay", 0)))
    total = sum((float(state[f"p{i}"]) - 0.3) ** 2 for i in range(1, 7))
    state.value = total + QUAD_OFFSET[state.kind]
    return COMPLETE


def curve_loss(lr: float, width: int, step: int) -> float:
    """A loss curve: decays toward a floor set by how far lr is from 1e-2 and width from 64;
    bad configurations plateau high."""
    floor = 0.1 + (math.log10(lr) + 2) ** 2 + 0.5 * (math.log2(width) - 6) ** 2 / 4
    return floor + 3.0 * math.exp(-step / 8.0)


def curve(state, channel):
    """Report the loss each step (``state.steps`` of them); return early when pruned; save
    and return INCOMPLETE when asked to stop (a resumed attempt goes on from there).
    ``state.steps_run`` counts the steps actually run (the compute used)."""
    steps = int(state.get("steps", 40))
    delay = float(state.get("delay", 0.05))
    done = int(state.get("steps_run", 0))  # a resumed attempt continues its curve
    for step in range(done, steps):
        loss = curve_loss(float(state.lr), int(state.width), step)
        state.loss = loss
        state.steps_run = step + 1
        channel.report(step, loss=loss)
        asked = channel.switch()
        if asked == "prune":
            return COMPLETE
        if asked == "stop":
            channel.save()
            return INCOMPLETE
        channel.save()
        time.sleep(delay)
    return COMPLETE
