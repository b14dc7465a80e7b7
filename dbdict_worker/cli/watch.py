"""``dbdict status --watch``: the sweep's overview, redrawn every few seconds in a terminal.

One frame per interval: per table the counts per status, a progress bar, the throughput and
an ETA; then the live workers. On a terminal the frame is redrawn in place with plain ANSI
codes; elsewhere (``| tee log``) the frames follow one another as plain text. With ``--json``
each frame is one line of JSON (the dashboard's overview object). An unreachable database
does not end the watch: the frame says so and the next interval tries again.
"""
from __future__ import annotations

import datetime as dt
import shutil
import sys
import time
from typing import IO, Any, Callable, Sequence

from dbdict_worker.constants import SHOWN_ORDER
from dbdict_worker.errors import DatabaseUnavailable, UsageError

#: Seconds between two frames unless ``--interval`` says otherwise.
DEFAULT_INTERVAL = 2.0
#: The first frame clears the screen (cursor home, erase all); later ones only go home and
#: overwrite, erasing the rest of each line and what is below the frame: no flicker.
CLEAR = "\x1b[H\x1b[2J"
HOME = "\x1b[H"
ERASE_LINE = "\x1b[K"
ERASE_BELOW = "\x1b[J"
#: Narrower than this, frames are drawn this wide anyway (the terminal wraps them).
MIN_WIDTH = 20
ORDER = SHOWN_ORDER
#: Always shown, even at 0; the others only when some job has them.
ALWAYS = {"START", "RUNNING", "DONE"}
#: Per-minute counts drawn from 0 to the busiest minute: zero, then nine levels.
SPARK = "_.:-=+*#%@"
UNREACHABLE = "database unreachable, retrying"


# ---------------------------------------------------------------------------------------------
# Rendering: a pure function of the overview dict (dbdict_worker.dashboard.data.overview)


def format_span(seconds: float | None) -> str:
    """A duration for people, two units at most: ``40s``, ``5m12s``, ``1h02m``, ``2d03h``;
    ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(0, int(round(seconds)))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_eta(table: dict[str, Any]) -> str:
    """The ETA of a table's overview: ``ETA 5m12s``; ``ETA ?`` while nothing finished in the
    last hour; ``all finished`` or ``no jobs`` when nothing is left."""
    total, finished = table.get("total", 0), table.get("finished", 0)
    if not total:
        return "no jobs"
    if finished >= total:
        return "all finished"
    eta = table.get("eta_seconds")
    return "ETA ?" if eta is None else f"ETA {format_span(eta)}"


def bar(fraction: float, width: int) -> str:
    """``[#####.....]``, ``width`` characters in all."""
    inner = max(1, width - 2)
    fraction = min(1.0, max(0.0, fraction))
    full = int(fraction * inner)  # floor: the bar is full only when everything finished
    return "[" + "#" * full + "." * (inner - full) + "]"


def sparkline(values: Sequence[int], width: int) -> str:
    """The last ``width`` values, each one character scaled to the largest."""
    values = list(values)[-width:] if width > 0 else []
    top = max(values, default=0)
    if not top:
        return SPARK[0] * len(values)
    return "".join(SPARK[0] if not v else SPARK[1 + min(8, (v * 9 - 1) // top)] for v in values)


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _wrap_items(items: list[str], width: int, indent: str = "  ") -> list[str]:
    """Items joined by two spaces, on as many lines as ``width`` needs."""
    lines: list[str] = []
    current = indent
    for item in items:
        if current.strip() and len(current) + 2 + len(item) > width:
            lines.append(current)
            current = indent
        current += ("  " if current.strip() else "") + item
    if current.strip():
        lines.append(current)
    return lines


def _when(iso: str | None) -> str:
    """An ISO-8601 time as local time (``2026-12-01 18:05:09 CET``), for the frame's header:
    in a log of frames (``| tee``), the date too."""
    if not iso:
        return "-"
    try:
        return dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return iso


def _table_lines(t: dict[str, Any], width: int) -> list[str]:
    total, finished = t.get("total", 0), t.get("finished", 0)
    pct = f"{100 * t.get('progress', 0.0):.0f}%" if total else "-"
    lines = [f"{t.get('table', '?')}  {finished}/{total} finished  {pct}  {format_eta(t)}",
             bar(t.get("progress", 0.0) if total else 0.0, width)]
    counts = t.get("counts", {})
    names = [s.name for s in ORDER] + sorted(set(counts) - {s.name for s in ORDER})
    lines += _wrap_items([f"{n} {counts.get(n, 0)}" for n in names
                          if n in ALWAYS or counts.get(n)], width)
    minutes = [int(b.get("done", 0)) + int(b.get("failed", 0)) for b in t.get("per_minute", [])]
    last5 = minutes[-5:]
    per_min = sum(last5) / len(last5) if last5 else 0.0
    # rate_per_hour: over the last hour, or since the first job of that hour ended.
    rate = (f"  {t.get('rate_per_hour', 0.0):.4g}/h, {per_min:.3g}/min over the last 5 min "
            f"({t.get('done_last_hour', 0)} DONE, {t.get('failed_last_hour', 0)} failed in "
            f"the last hour)")
    if len(rate) > width:  # the same numbers, in fewer words
        rate = (f"  {t.get('rate_per_hour', 0.0):.4g}/h, {per_min:.3g}/min (5m), "
                f"{t.get('failed_last_hour', 0)} failed (1h)")
    lines.append(rate)
    if minutes:
        label = f"  per minute, max {max(minutes)}: "
        room = width - len(label) - 2
        if room >= 10:
            lines.append(f"{label}|{sparkline(minutes, room)}|")
    for f in t.get("failures", [])[:3]:
        error = (f.get("error") or "").strip().splitlines()
        lines.append(f"  failed #{f.get('id')} {f.get('status')}: {error[-1] if error else ''}")
    return lines


def _worker_lines(workers: list[dict[str, Any]], width: int) -> list[str]:
    lost = sum(1 for w in workers if w.get("lost"))
    if not workers:
        return ["workers: none live"]
    head = f"workers: {len(workers) - lost} live" + (f", {lost} LOST" if lost else "")
    hostw = min(max(4, *(len(str(w.get("host") or "")) for w in workers)), max(8, width // 3))
    gpuw = min(max(4, *(len(str(w.get("gpus") or "-")) for w in workers)), 12)
    rows = [head, f"  {'host':<{hostw}} {'state':<8} {'slots':>5} {'gpus':<{gpuw}} {'beat':>6}  "
                  "jobs"]
    for w in workers:
        # "degraded: <why>" is too long for a column; `dbdict-worker list` says why.
        state = "LOST" if w.get("lost") else ("draining" if w.get("draining")
                                              else str(w.get("state") or "?").split(":")[0])
        gpus = w.get("gpus") or "-"
        row = (f"  {_fit(str(w.get('host') or '?'), hostw):<{hostw}} {state:<8} "
               f"{w.get('slots', 0):>5} {_fit(str(gpus), gpuw):<{gpuw}} "
               f"{format_span(w.get('heartbeat_age')):>6}  ")
        jobs = [str(j) for j in w.get("jobs", [])]
        shown = " ".join(jobs) or "-"
        room = width - len(row)
        if len(shown) > room:  # as many ids as fit, then how many more
            kept: list[str] = []
            for j in jobs:
                more = f" +{len(jobs) - len(kept) - 1}"
                if len(" ".join(kept + [j])) + len(more) > room:
                    break
                kept.append(j)
            shown = " ".join(kept) + f" +{len(jobs) - len(kept)}"
        rows.append(row + shown + ("  <- lost" if w.get("lost") else ""))
    return rows


def render(overview: dict[str, Any] | None, width: int, *, notice: str | None = None,
           interval: float | None = None) -> str:
    """One frame, no line longer than ``width``: a header, ``notice`` (e.g. the database is
    unreachable) if any, each table of ``overview`` (the dict of
    ``dbdict_worker.dashboard.data.overview``; None: nothing read yet) and the workers."""
    width = max(MIN_WIDTH, width)
    every = f"every {interval:g}s, " if interval else ""
    lines = [f"dbdict status  {_when((overview or {}).get('now'))}  ({every}Ctrl-C quits)"]
    if notice:
        lines.append(f"!! {notice}")
    if overview is not None:
        if notice:
            lines.append(f"   (last read at {_when(overview.get('now'))})")
        tables = overview.get("tables", [])
        if not tables:
            lines += ["", "no jobs (no table yet)"]
        for t in tables:
            lines += [""] + _table_lines(t, width)
        lines += [""] + _worker_lines(overview.get("workers", []), width)
    return "\n".join(_fit(line, width) for line in lines)


# ---------------------------------------------------------------------------------------------
# Showing frames


class Screen:
    """Writes frames to ``out``: redrawn in place on a terminal, else one after another."""

    def __init__(self, out: IO[str], tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.frames = 0

    def size(self) -> tuple[int, int]:
        """(columns, lines), read at each frame so that a resized terminal is followed."""
        cols, rows = shutil.get_terminal_size()
        return cols, rows

    def show(self, frame: str) -> None:
        if not self.tty:
            self.out.write(("\n" if self.frames else "") + frame + "\n")
        else:
            lines = frame.split("\n")
            rows = self.size()[1]
            if len(lines) > rows > 1:  # taller than the screen: scrolling would break the redraw
                cut = len(lines) - rows + 2
                lines = lines[: rows - 1] + [f"… {cut} more lines: enlarge the terminal"]
            start = CLEAR if not self.frames else HOME
            self.out.write(start + (ERASE_LINE + "\n").join(lines) + ERASE_LINE + ERASE_BELOW)
        self.frames += 1
        self.out.flush()

    def close(self) -> None:
        """Leave the last frame on screen, the shell's prompt below it."""
        if self.tty and self.frames:
            self.out.write("\n")
            self.out.flush()


# ---------------------------------------------------------------------------------------------
# The loop


class _Outage:
    """A silent OutageWatcher: the frame tells of an outage, log lines would tear it."""

    def failed(self, why: str, retrying_for: float) -> None:
        pass

    def succeeded(self) -> None:
        pass


def check_options(*, by_key: str | None, where: Sequence[str], status: Sequence[str],
                  interval: float | None, watch: bool) -> None:
    """UsageError for options ``--watch`` cannot honour (or ``--interval`` without it)."""
    if not watch:
        if interval is not None:
            raise UsageError("--interval goes with --watch")
        return
    if by_key:
        raise UsageError("--by cannot be combined with --watch (run `dbdict status --by KEY`)")
    if where or status:
        raise UsageError("--watch shows whole tables: --where and --status do not apply "
                         "(select tables with --table)")


def watch(store: Any, *, tables: list[str] | None, interval: float = DEFAULT_INTERVAL,
          as_json: bool = False, out: IO[str] | None = None,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Show the overview of ``tables`` every ``interval`` seconds until Ctrl-C (which
    returns normally). Each look retries the database briefly; a look that fails shows
    "database unreachable, retrying" and the next interval tries again."""
    from dbdict_worker.dashboard import data
    from dbdict_worker.export import dumps

    out = sys.stdout if out is None else out
    # A short retry per look so that the frame says the database is gone within seconds.
    looker = store.with_retry(max(1.0, min(interval, 5.0)), watcher=_Outage())
    screen = Screen(out)
    last: dict[str, Any] | None = None
    failing = False
    try:
        while True:
            started = time.monotonic()
            notice = None
            try:
                last = data.overview(looker, tables=tables)
            except DatabaseUnavailable as exc:
                notice = f"{UNREACHABLE} ({exc})"
            if as_json:
                if notice is None:
                    out.write(dumps(last, nan="string") + "\n")
                    out.flush()
                if (notice is not None) != failing:  # once when it starts, once when it ends
                    print(f"dbdict: {notice or 'database reachable again'}", file=sys.stderr,
                          flush=True)
            else:
                screen.show(render(last, screen.size()[0], notice=notice, interval=interval))
            failing = notice is not None
            sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        screen.close()  # Ctrl-C is how a watch ends: not a failure
