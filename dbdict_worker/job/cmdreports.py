"""``channel.report`` for command experiments: the program appends lines to the file named
by ``$DBDICT_METRICS_FILE`` (``metrics.log`` in its workdir)::

    echo "$epoch loss=$loss acc=$acc" >> "$DBDICT_METRICS_FILE"

Each line is ``STEP KEY=VALUE [KEY=VALUE ...]`` (a step: an int >= 0; values: numbers). The
runner reads the lines added since the attempt started, as it polls the program and at its
end, and reports them through the channel (coalesced like a Python experiment's). Malformed
lines are skipped, with one note on stderr per attempt.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

METRICS_FILE = "metrics.log"
METRICS_FILE_ENV = "DBDICT_METRICS_FILE"

#: Called with (step, {key: value}) for each line read.
Report = Callable[..., None]


def parse_line(line: str) -> tuple[int, dict[str, float]] | None:
    """``(step, metrics)`` of one line, or None when it is malformed."""
    fields = line.split()
    if len(fields) < 2:
        return None
    try:
        step = int(fields[0])
        metrics = {}
        for field in fields[1:]:
            key, sep, value = field.partition("=")
            if not sep or not key:
                return None
            metrics[key] = float(value)
    except ValueError:
        return None
    return (step, metrics) if step >= 0 else None


class ReportFile:
    """Follows the metrics file of one attempt from its size at the start."""

    def __init__(self, path: Path, report: Report) -> None:
        self.path = path
        self.report = report
        self._pending = b""
        self._warned = False
        try:
            self._offset = path.stat().st_size  # earlier attempts' lines were reported then
        except OSError:
            self._offset = 0

    def read(self) -> None:
        """Report the complete lines added since the last read."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        if not chunk:
            return
        self._offset += len(chunk)
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            parsed = parse_line(line)
            if parsed is None:
                self._warn(line)
                continue
            step, metrics = parsed
            try:
                self.report(step, **metrics)
            except (TypeError, ValueError):
                self._warn(line)

    def _warn(self, line: str) -> None:
        if not self._warned:
            self._warned = True
            sys.stderr.write(f"dbdict: ignored a malformed line of {self.path.name} (want "
                             f"'STEP KEY=VALUE ...'): {line[:200]!r}\n")
