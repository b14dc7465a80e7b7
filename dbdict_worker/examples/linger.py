"""Returns COMPLETE but leaves a non-daemon thread running, so its process cannot exit by
itself: the parent must kill it once the outcome is reported (``JobSpec.linger``)."""
from __future__ import annotations

import threading
import time

from dbdict_worker import COMPLETE


def experiment(state, channel):
    """Start a thread that never ends, then return."""
    threading.Thread(target=lambda: time.sleep(3600), daemon=False).start()
    state.result = "returned"
    return COMPLETE
