"""A command experiment for tests and the docs, in any-language style (reads and writes
``state.json``; exit 0 / 75 / other)::

    dbdict run --cmd 'python -m dbdict_worker.examples.cmd_step --exit {code}' code=0

It increments ``calls``, sets ``result = 2 * x`` (``x`` from $DBDICT_P_X, default 0) and
records its argv, then exits with the code given (75 if SIGTERM arrives during ``--sleep``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0,
                        help="seconds to wait (SIGTERM ends the wait and exits 75)")
    parser.add_argument("--write-bad", action="store_true",
                        help="write a value that cannot be stored (a dict inside a list)")
    args, rest = parser.parse_known_args()
    path = os.environ["DBDICT_STATE_FILE"]
    with open(path) as f:
        state = json.load(f)
    state["calls"] = state.get("calls", 0) + 1
    state["result"] = 2 * json.loads(os.environ.get("DBDICT_P_X", "0"))
    state["argv"] = sys.argv[1:]
    if args.write_bad:
        state["bad"] = [{"nested": "dict"}]
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)
    print(f"cmd_step: calls={state['calls']}", flush=True)
    deadline = time.monotonic() + args.sleep
    while time.monotonic() < deadline and not stopped:
        time.sleep(0.01)
    return 75 if stopped else args.exit


if __name__ == "__main__":
    sys.exit(main())
