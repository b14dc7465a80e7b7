"""Per-job overhead of the subprocess runner, and the cost of channel calls.

    python -m dbdict_worker.bench.runner [--runs N]

Prints medians over N runs, measured in the same process one after the other:

- ``python -c pass``: a bare interpreter spawn (the floor any subprocess runner pays);
- ``import runner``: ``python -c 'import dbdict_worker.job.runner'`` (our import cost);
- ``JobProcess``: start + wait for the no-op experiment (workdir files, pipe, threads,
  child start, import, orig.conf/current.conf writes, outcome);
- ``JobRun``: the same through JobRun (what ``dbdict run`` uses);
- fork server: JobProcess with the job forked from a warm interpreter (what workers use);
- channel calls: ns per ``switch()``, per coalesced ``save()`` and per ``save_and_switch()``;
  per coalesced ``report(step, loss=..., acc=...)`` (goal: under 2 µs), next to an empty
  Python function called with the same arguments (the floor of any call), both in this run.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Callable

from dbdict_worker.channel import Channel
from dbdict_worker.job.forkserver import ForkServer
from dbdict_worker.job.jobrun import JobRun
from dbdict_worker.job.process import JobProcess, JobSpec
from dbdict_worker.state import DD, flatten

NOOP = "dbdict_worker.examples.noop"


def _median_ms(fn: Callable[[int], None], runs: int) -> float:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def spawn_ms(runs: int, *code: str) -> float:
    """Median ms of ``python -c CODE``."""
    return _median_ms(lambda i: subprocess.run([sys.executable, "-c", *code], check=True),
                      runs)


def jobprocess_ms(runs: int, base: Path) -> float:
    """Median ms from JobProcess.start to its outcome, for the no-op experiment."""
    def once(i: int) -> None:
        outcome = JobProcess.start(JobSpec(NOOP, {"i": i}, workdir=base / f"p{i}")).wait(60)
        assert outcome is not None and outcome.complete, outcome
    return _median_ms(once, runs)


def forked_ms(runs: int, base: Path) -> float:
    """Median ms of the no-op job through JobProcess forked by a warm fork server (the
    worker's path)."""
    server = ForkServer()
    try:
        JobProcess.start(JobSpec(NOOP, {}, workdir=base / "fwarm"), forkserver=server).wait(60)

        def once(i: int) -> None:
            spec = JobSpec(NOOP, {"i": i}, workdir=base / f"f{i}")
            outcome = JobProcess.start(spec, forkserver=server).wait(60)
            assert outcome is not None and outcome.complete, outcome
        return _median_ms(once, runs)
    finally:
        server.close()


def jobrun_ms(runs: int, base: Path) -> float:
    """Median ms of JobRun.run() (no exproot) for the no-op experiment."""
    def once(i: int) -> None:
        result = JobRun(JobSpec(NOOP, {"i": i}, workdir=base / f"r{i}")).run()
        assert result.outcome.complete, result.outcome
    return _median_ms(once, runs)


def _empty(step: int, **metrics: float) -> None:
    """The baseline of report(): a call with the same arguments that does nothing."""


def channel_ns(number: int = 1_000_000) -> dict[str, float]:
    """ns per call of switch(), a coalesced save(), save_and_switch(), a coalesced
    report(step, loss=, acc=) and, as its baseline, an empty function called alike."""
    state = DD(step=0, lr=0.1, model=DD(n_hidden=100))
    flushes = []
    channel = Channel(state, sink=lambda st: flushes.append(flatten(st)), save_interval=3600)
    channel.save()  # the first save flushes; the timed ones are coalesced
    rows: list = []
    channel.metrics_sink = rows.extend
    channel.report_interval = 3600
    channel.report(0, loss=1.0, acc=0.5)  # the first report is sent; the timed ones coalesce
    out = {}
    for name, fn in (("switch()", channel.switch), ("save()", channel.save),
                     ("save_and_switch()", channel.save_and_switch),
                     ("empty call f(step, loss=, acc=) (baseline)",
                      lambda: _empty(7, loss=0.25, acc=0.5)),
                     ("report(step, loss=, acc=), coalesced",
                      lambda: channel.report(7, loss=0.25, acc=0.5))):
        best = min(timeit.repeat(fn, number=number, repeat=3))
        out[name] = best / number * 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per measurement")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="dbdict-bench-"))
    try:
        spawn_ms(3, "pass")  # warm the page cache
        rows = [
            ("python -c pass", spawn_ms(args.runs, "pass")),
            ("python -c 'import dbdict_worker.job.runner'",
             spawn_ms(args.runs, "import dbdict_worker.job.runner")),
            ("JobProcess no-op job (start -> outcome)", jobprocess_ms(args.runs, base)),
            ("JobRun no-op job (dbdict run's path)", jobrun_ms(args.runs, base)),
            ("JobProcess via the fork server (workers)", forked_ms(args.runs, base)),
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    floor = rows[0][1]
    print(f"per-job runner overhead, median of {args.runs} runs (python {sys.version.split()[0]})")
    for name, ms in rows:
        if name == rows[0][0]:
            extra = ""
        elif ms >= floor:
            extra = f"   (+{ms - floor:6.1f} ms over the bare spawn)"
        else:
            extra = f"   ({floor - ms:6.1f} ms under the bare spawn)"
        print(f"  {name:<44} {ms:8.1f} ms{extra}")
    print("channel calls (ns per call, best of 3 x 1e6)")
    for name, ns in channel_ns().items():
        print(f"  {name:<44} {ns:8.1f} ns   ({ns / 1000:.3f} µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
