"""The pipe between a job's child process and its parent: newline-delimited JSON messages.

The "pipe" is a socket pair, so it goes both ways: the child reports its saves and its end;
the parent tells the child until when the job's lease is renewed (see
:mod:`dbdict_worker.job.watchdog`).

The child writes each message as one complete line with a single ``write_message`` call; the
parent only ever acts on complete lines (:class:`LineBuffer`), so a child that dies in the
middle of a write leaves at most a partial trailing line, which is dropped, never half-used.

State values keep their exact type on the wire: JSON scalars travel as themselves (NaN and
infinities as JSON's ``NaN``/``Infinity`` extensions), lists and tuples as their Python literal
text (``{"py": "(1, [2.5, nan])"}``), which :func:`dbdict_worker.state.parse_value` reads back.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Mapping

#: Message kinds, child to parent.
STARTED = "started"  # the experiment was imported and is about to be called
SAVE = "save"        # {"state": wire state, "push": bool}: a flushed save; with "push" the
#                      child waits for PUSHED (the workdir is pushed at this save point)
END = "end"          # {"status": Status name, "error": str|None, "state": wire state}
METRICS = "metrics"  # {"rows": [[step, key, value], ...]}: a flush of channel.report's reports
#: Message kinds, parent to child.
RENEWED = "renewed"  # {"until": CLOCK_MONOTONIC seconds}: run on until then, unless renewed
PUSHED = "pushed"    # {"ok": bool}: the answer to a save with "push"; the experiment goes on
PRUNE = "prune"      # {}: a search's pruner ends the job early: switch() returns 'prune'

#: Longest line the parent buffers; a longer one (a runaway child) is dropped, not used.
MAX_LINE = 256 * 1024 * 1024


def encode_state(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A checked flat state as JSON-ready values (lists/tuples as their literal text)."""
    from dbdict_worker.state import format_value

    return {k: ({"py": format_value(v)} if isinstance(v, (list, tuple)) else v)
            for k, v in flat.items()}


def decode_state(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`encode_state`."""
    from dbdict_worker.state import parse_value

    out: dict[str, Any] = {}
    for key, value in wire.items():
        if isinstance(value, dict):
            value = parse_value(value["py"])
        out[key] = value
    return out


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as one line of bytes (no newline inside: JSON escapes them)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=True).encode("utf-8") + b"\n"


def write_message(fd: int, message: Mapping[str, Any]) -> None:
    """Write one whole message to ``fd`` (looping over short writes; blocking)."""
    data = memoryview(encode(message))
    while data:
        n = os.write(fd, data)
        data = data[n:]


class LineBuffer:
    """Accumulates bytes read from the pipe and yields only complete messages."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        """Add ``chunk``; yield every message completed by it (malformed lines are skipped)."""
        self._pending += chunk
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                if len(self._pending) > MAX_LINE:  # a runaway child: drop, do not grow forever
                    self._pending.clear()
                return
            line = bytes(self._pending[:end])
            del self._pending[:end + 1]
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and isinstance(message.get("kind"), str):
                yield message

    @property
    def partial(self) -> int:
        """Bytes of an incomplete trailing line (what a dying child may leave; ignored)."""
        return len(self._pending)
