"""What reading results costs on a big table: the selective reads that should stay
interactive (``list --where``, ``export --where``, the SQL view with a WHERE,
``Store.dataframe(where=...)``, ``status --by``) and the full ones (CSV export, the whole
table into pandas, with its peak memory).

:func:`measure_reads` runs each once over an existing table of the bench's sample states
(:func:`dbdict_worker.bench.samples.sample_states`: keys p0...p9, p0 an int, p1 a float,
every value distinct), through the Store calls the CLI commands make. Goals at 1,000,000
jobs x 10 keys: each selective read under 1 s, the CSV export under 6 s, the frame under
10 s and 1 GB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any, Callable

#: Run in a child process: the frame's seconds and the child's peak RSS, as JSON.
_FRAME_CHILD = """
import json, resource, sys, time
from dbdict_worker.store import Store
with Store.open(sys.argv[1]) as store:
    t = time.perf_counter()
    df = store.dataframe(table=sys.argv[2])
    seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
print(json.dumps({"seconds": seconds, "rows": len(df), "peak_rss_mb": peak}))
"""


def _seconds(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure_reads(url: str, table: str, *, by_key: str = "p0",
                  frame_child: bool = True) -> dict[str, float]:
    """Seconds for each read of the jobs of ``table`` (an existing table of sample states),
    filtered on one job's ``p0`` (an int) where a read is selective; ``status_by_s`` counts
    per value of ``by_key``. With ``frame_child``, the full frame is read in a child
    process, which also gives its peak RSS (``dataframe_peak_rss_mb``); otherwise here."""
    from dbdict_worker import frames
    from dbdict_worker.db import views
    from dbdict_worker.store import Store

    out: dict[str, float] = {}
    with Store.open(url) as store:
        first = store.jobs_with_state(tables=[table], limit=1)
        if not first or "p0" not in first[0][1]:
            raise RuntimeError(f"table {table!r} holds no job of the bench's sample states")
        value = first[0][1]["p0"]
        where = [("p0", value)]

        def listed() -> None:  # dbdict list --where
            if len(store.jobs_with_state(tables=[table], where=where)) != 1:
                raise RuntimeError("list --where did not find its one job")

        def exported(fmt: str, **select: Any) -> Callable[[], None]:
            def run() -> None:  # dbdict export [--where]
                with open(os.devnull, "w") as sink:
                    store.export(sink, fmt=fmt, tables=[table], **select)
            return run

        out["list_where_s"] = _seconds(listed)
        out["export_where_s"] = _seconds(exported("csv", where=where))

        view = f"dbdict_bench_reads_{uuid.uuid4().hex[:8]}"
        store.create_view(view, tables=[table])
        try:
            def viewed() -> None:  # psql: SELECT * FROM view WHERE "p0" = ...
                with store.engine.connect() as conn:
                    rows = views.rows_where(conn, view, "p0", value)
                if len(rows) != 1:
                    raise RuntimeError(f"the view gave {len(rows)} rows, not 1")

            out["view_where_s"] = _seconds(viewed)
        finally:
            store.drop_view(view)

        frames.need_pandas()  # imported before the clock starts, as in a user's session
        out["dataframe_where_s"] = _seconds(
            lambda: store.dataframe(table=table, where=where))
        out["status_by_s"] = _seconds(lambda: store.counts_by(by_key, tables=[table]))
        out["export_csv_s"] = _seconds(exported("csv"))
        if not frame_child:
            out["dataframe_s"] = _seconds(lambda: store.dataframe(table=table))
    if frame_child:
        done = subprocess.run([sys.executable, "-c", _FRAME_CHILD, url, table],
                              capture_output=True, text=True, check=True)
        got = json.loads(done.stdout.strip().splitlines()[-1])
        out["dataframe_s"] = got["seconds"]
        out["dataframe_peak_rss_mb"] = got["peak_rss_mb"]
    return out


def table_rows(f: dict[str, float], n: int) -> list[tuple[str, str, str, str, str]]:
    """The figures of :func:`measure_reads` over ``n`` jobs as rows of the bench's table
    (figure, value, baseline, ratio, goal)."""
    rows = [(f"  {n} jobs: {what} (s)", f"{f[key]:.2f}", "", "", goal) for what, key, goal in (
        ("list --where (one job)", "list_where_s", "< 1"),
        ("export --where (one job)", "export_where_s", "< 1"),
        ('the view, WHERE "p0" = (psql)', "view_where_s", "< 1"),
        ("Store.dataframe(where=...)", "dataframe_where_s", "< 1"),
        ("status --by p0", "status_by_s", "< 1"),
        ("export to CSV, every job", "export_csv_s", "< 6"),
        ("Store.dataframe(), every job", "dataframe_s", "< 10"),
    ) if key in f]
    if "dataframe_peak_rss_mb" in f:
        rows.append((f"  {n} jobs: Store.dataframe() peak memory (MB)",
                     f"{f['dataframe_peak_rss_mb']:.0f}", "", "", "< 1000"))
    return rows


if __name__ == "__main__":  # python -m dbdict_worker.bench.reads URL TABLE
    print(json.dumps(measure_reads(sys.argv[1], sys.argv[2]), indent=1))
