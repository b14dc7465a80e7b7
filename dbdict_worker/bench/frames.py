"""What reading results into pandas costs: ``Store.dataframe`` of N jobs x 10 keys, next to
``Store.export`` of the same jobs to CSV (what ``dbdict export`` does; written to /dev/null),
runs of the two interleaved in the same bench run (frame, CSV, CSV, frame, ...) after one
untimed run of each; medians of each, and their ratio is the figure (goal: under 2).

    dbdict-worker bench --db URL [--quick]                # part of the bench's table
    dbdict-worker bench --db URL --only dataframe         # this figure alone
"""
from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Any, Mapping, Sequence

def measure_dataframe(url: str, states: Sequence[Mapping[str, Any]],
                      rounds: int = 3) -> dict[str, float]:
    """Seconds for ``Store.dataframe`` and for the CSV export of the jobs of ``states``
    (enqueued into a table of the bench's own, deleted afterwards): medians of ``rounds``
    interleaved runs each, and their ratio."""
    from dbdict_worker.db import maintenance
    from dbdict_worker.store import Store

    n = len(states)
    table = f"dbdict_bench_{uuid.uuid4().hex[:10]}"
    seconds: dict[str, list[float]] = {"frame": [], "csv": []}
    with Store.open(url) as store:
        store.enqueue("bench.noop", states, table=table)
        if not store.target.is_sqlite:  # settled, as a sweep's table is when it is read
            maintenance.vacuum_analyze(store.engine)

        def frame() -> None:
            got = store.dataframe(table=table)
            if len(got) != n or got.shape[1] < 10:
                raise RuntimeError(f"Store.dataframe gave {got.shape}, not {n} rows")

        def csv() -> None:
            with open(os.devnull, "w") as sink:
                got = store.export(sink, fmt="csv", tables=[table])
            if got != n:
                raise RuntimeError(f"the CSV export wrote {got} jobs, not {n}")

        runs = {"frame": frame, "csv": csv}
        frame(), csv()  # untimed: the first read of a new table warms the caches
        for r in range(rounds):
            for which in (("frame", "csv") if r % 2 == 0 else ("csv", "frame")):
                started = time.perf_counter()
                runs[which]()
                seconds[which].append(time.perf_counter() - started)
        store.delete(tables=[table])
        with store.engine.begin() as conn:
            maintenance.drop_job_tables(conn, [table])
        if not store.target.is_sqlite:
            maintenance.vacuum_analyze(store.engine)
    f, c = statistics.median(seconds["frame"]), statistics.median(seconds["csv"])
    return {"dataframe_s": f, "dataframe_export_csv_s": c, "dataframe_ratio": f / c}


def table_row(figures: Mapping[str, float], n: int) -> tuple[str, str, str, str]:
    """The figure as a row of the bench's table: (figure, value, baseline, goal)."""
    return (f"Store.dataframe {n} x 10 keys (s)", f"{figures['dataframe_s']:.2f}",
            f"export to CSV {figures['dataframe_export_csv_s']:.2f} s (ratio "
            f"{figures['dataframe_ratio']:.2f}, medians, interleaved)", "ratio < 2")
