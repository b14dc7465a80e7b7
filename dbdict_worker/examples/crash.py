"""Dies without reporting, as a segfault or the OOM killer would: ``how=kill`` (SIGKILL to
itself, the default) or ``how=exit`` (``os._exit(code)``, code default 3), after one save."""
from __future__ import annotations

import os
import signal


def experiment(state, channel):
    """Save once, then die abruptly."""
    state.step = 1
    channel.flush()
    if state.get("how", "kill") == "exit":
        os._exit(state.get("code", 3))
    os.kill(os.getpid(), signal.SIGKILL)
