"""An experiment that keeps its "weights" in a checkpoint file, to prove a resumed job starts
from a state and files saved at the same moment.

Parameters (all optional):

- ``total``: steps to run (default 100);
- ``sleep``: seconds each step takes (default 0). The sleep comes after the step's checkpoint
  is written and before its save, so a kill during a run most often lands between the two;
- ``ckpt_every``: steps between checkpoints (default 1). Only checkpoint steps save
  (``save_and_switch()``); the steps between call ``switch()``.

Each step adds its number to the weights ``w``. At a checkpoint step, ``weights.json``
(``{"step": s, "w": w}``) is replaced by an atomic rename, then the state (``step``) is saved.
A start reads the checkpoint and requires its step to equal the state's: a state and files
that do not belong together raise (ERR_RUN), naming both steps. So a run, however often
interrupted and resumed, ends DONE with ``result == total * (total + 1) // 2`` or fails
loudly. Each start appends ``start at step S pid P`` to ``starts.log`` (P leads the job's
process group).
"""
from __future__ import annotations

import json
import os
import time

from dbdict_worker import COMPLETE, INCOMPLETE

CHECKPOINT = "weights.json"


def load(step: int) -> int:
    """The weights saved with state step ``step`` (0 before the first checkpoint)."""
    try:
        with open(CHECKPOINT, encoding="utf-8") as f:
            saved = json.load(f)
    except FileNotFoundError:
        saved = {"step": 0, "w": 0}
    if saved["step"] != step:
        raise RuntimeError(f"state and files disagree: the state is at step {step}, "
                           f"{CHECKPOINT} at step {saved['step']}")
    return int(saved["w"])


def write(step: int, w: int) -> None:
    """Replace the checkpoint atomically (write, fsync, rename)."""
    tmp = f"{CHECKPOINT}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"step": step, "w": w}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, CHECKPOINT)


def experiment(state, channel):
    """Accumulate ``w`` over ``total`` steps, checkpointing as it goes (see the module)."""
    total = state.get("total", 100)
    pause = state.get("sleep", 0)
    every = max(1, state.get("ckpt_every", 1))
    state.setdefault("step", 0)
    # The state changes only at checkpoints: a stop between two returns the last one's.
    step = state.step
    w = load(step)
    with open("starts.log", "a") as f:
        f.write(f"start at step {step} pid {os.getpid()}\n")
    while step < total:
        step += 1
        w += step
        checkpoint = step % every == 0 or step == total
        if checkpoint:
            write(step, w)
        if pause:
            time.sleep(pause)
        if checkpoint:
            state.step = step
            answer = channel.save_and_switch()
        else:
            answer = channel.switch()
        if answer == "stop":
            return INCOMPLETE
    state.result = w
    return COMPLETE
