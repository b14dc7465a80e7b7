"""What keeping output tails costs: the end-to-end rate of jobs through a real worker with log
capture on (``--log-tail 65536``, the default) and off (``--log-tail 0``), runs of the two
interleaved in the same bench run (on, off, off, on, ...), medians of each; the ratio is the
figure. The job is the no-op experiment plus one line printed to stdout and one to stderr
(:func:`say`), so every job of the "on" runs has a final tail to write.

    dbdict-worker bench --db URL [--quick]          # part of the bench's table
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import uuid

#: The experiment measured (this module's :func:`say`).
EXPERIMENT = "dbdict_worker.bench.logcost.say"


def say(state, channel):
    """A no-op job that prints one line to each stream."""
    print("one line of output")
    print("one line of errors", file=sys.stderr)


def measure_log_cost(url: str, n: int, rounds: int = 3, slots: int = 2,
                     experiment: str = EXPERIMENT) -> dict[str, float]:
    """Jobs/s of ``n`` jobs through ``dbdict-worker start --slots N --until-empty`` with log
    capture on and off, ``rounds`` runs of each, interleaved; medians and their ratio."""
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            rates[mode].append(_rate(url, n, slots, "65536" if mode == "on" else "0",
                                     experiment))
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {"end_to_end_logs_on_jobs_per_s": on, "end_to_end_logs_off_jobs_per_s": off,
            "log_capture_ratio": on / off}


def _rate(url: str, n: int, slots: int, log_tail: str, experiment: str) -> float:
    """One run: jobs/s from the first booking to the last finish (database clock)."""
    from dbdict_worker.constants import Status
    from dbdict_worker.db import maintenance, queries
    from dbdict_worker.store import Store

    table = f"dbdict_bench_{uuid.uuid4().hex[:10]}"
    with Store.open(url) as store:
        ids = store.enqueue(experiment, [{"i": i} for i in range(n)], table=table).created
        full = store.target.url.render_as_string(hide_password=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
        env["DBDICT_DB"] = full
        with tempfile.TemporaryFile(mode="w+") as log, \
                tempfile.TemporaryDirectory(prefix="dbdict-bench-") as base:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dbdict_worker.cli.worker", "start", "--table", table,
                 "--slots", str(slots), "--until-empty", "--log-tail", log_tail,
                 "--workdir-base", base], stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=tempfile.gettempdir())
            code = proc.wait(600)
            log.seek(0)
            output = log.read()
        with store.engine.connect() as conn:
            first, last = queries.booking_span(conn, ids)
        done = store.counts(tables=[table]).get((table, Status.DONE), 0)
        kept = sum(1 for i in ids[:5] for _ in store.log_tails(i))
        store.delete(tables=[table])
        with store.engine.begin() as conn:
            maintenance.drop_job_tables(conn, [table])
    if code != 0 or done != n or first is None or last is None:
        raise RuntimeError(f"the bench worker failed ({code}, {done}/{n} done): {output}")
    if experiment == EXPERIMENT and kept != (0 if log_tail == "0" else 10):
        raise RuntimeError(f"--log-tail {log_tail}: {kept} tails kept for 5 jobs")
    return n / (last - first).total_seconds()
