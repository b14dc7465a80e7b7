"""Benchmarks against a real database, each figure next to a baseline measured in the same run.

    python -m dbdict_worker.bench.command --db postgresql://postgres@127.0.0.1/benchdb [--quick]

- enqueue: N jobs x 10 parameters through ``Store.enqueue`` (jobs/s), next to a bare COPY of the
  same rows into a scratch table (the ceiling of what any client could do);
- book+finish: P processes booking and finishing jobs through the Store (jobs/s), next to the
  same claim and finish statements (captured from the Store) run bare by psycopg2 with the
  same concurrency (the ratio, taken in each run, is the figure: what the library costs), and
  next to a minimal queue's claim and finish (no events, no state) for scale;
- end to end: no-op experiments through a real ``dbdict-worker start --slots 2`` (jobs/s, from
  the first booking to the last finish on the database clock), next to bare
  ``python -c pass`` spawns, two at a time;
- log capture: the same with jobs printing a line to each stream, ``--log-tail`` on and off
  in interleaved runs (:mod:`.logcost`; the on/off ratio is the figure);
- pickup latency: an idle worker (LISTEN, no fast polling); from ``enqueue()`` returning to
  the experiment's first line, p50/p95, next to one ``python -c pass`` spawn.
- results in pandas: ``Store.dataframe`` of N jobs x 10 keys next to the CSV export of the
  same jobs, interleaved (:mod:`.frames`; ``--only dataframe`` measures it alone).

It works in job tables of its own (``dbdict_bench_<random>``) and deletes them afterwards.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable

from dbdict_worker.constants import Status
from dbdict_worker.errors import DbdictError
# Light (psycopg2 only): the spawned bare workers import this module before they start.
from dbdict_worker.db import baselines
from dbdict_worker.bench import frames as benchframes
from dbdict_worker.bench import logcost


def sample_states(n: int, keys: int = 10) -> list[dict[str, Any]]:
    """``n`` distinct states with ints, floats and strings."""
    def value(i: int, k: int) -> Any:
        if k % 3 == 0:
            return i * keys + k
        if k % 3 == 1:
            return i / (k + 1)
        return f"s{i}-{k}"
    return [{f"p{k}": value(i, k) for k in range(keys)} for i in range(n)]


def _bench_table() -> str:
    return f"dbdict_bench_{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------
# enqueue


def measure_enqueue(url: str, n: int) -> dict[str, float]:
    """Enqueue ``n`` jobs x 10 params, then export them to CSV; next to a bare COPY of the
    same rows into scratch tables, and a bare COPY of the state rows out."""
    from dbdict_worker.store import Store

    states = sample_states(n)
    table = _bench_table()
    with Store.open(url) as store:
        t = time.perf_counter()
        result = store.enqueue("bench.noop", states, table=table)
        seconds = time.perf_counter() - t
        assert len(result.created) == n
        with open(os.devnull, "w") as sink:
            t = time.perf_counter()
            exported = store.export(sink, fmt="csv", tables=[table])
            export_s = time.perf_counter() - t
        assert exported == n
        bare_out = _bare_copy_out(store, result.created)
        bare = _bare_copy(store, states)
        _remove_tables(store, table)
    return {"enqueue_jobs_per_s": n / seconds, "bare_copy_jobs_per_s": n / bare,
            "export_csv_s": export_s, "bare_copy_out_s": bare_out}


def _bare_copy_out(store, ids: list[int]) -> float:
    """Seconds to COPY the jobs' state rows out, unpivoted, with psycopg2."""
    with baselines.Bare.borrow(store.engine) as bare:
        t = time.perf_counter()
        with open(os.devnull, "w") as sink:
            bare.copy_state_out(min(ids), max(ids), sink)
        bare.rollback()
        return time.perf_counter() - t


def _bare_copy(store, states: list[dict[str, Any]]) -> float:
    """Seconds to COPY the jobs and their key/value rows into two unindexed temp tables."""
    jobs_rows, state_rows = baselines.scratch_rows(states)
    with baselines.Bare.borrow(store.engine) as bare:
        bare.create_scratch_tables()
        t = time.perf_counter()
        bare.copy_into_scratch(jobs_rows, state_rows)
        bare.commit()
        return time.perf_counter() - t


def _remove_tables(store, *names: str) -> None:
    """Delete the bench's tables and their jobs, then vacuum what that left dead, so that
    neither the next figure nor the user's autovacuum pays for the bench's rows."""
    from dbdict_worker.db import maintenance

    store.delete(tables=list(names))
    with store.engine.begin() as conn:
        maintenance.drop_job_tables(conn, names)
    maintenance.vacuum_analyze(store.engine)


# ---------------------------------------------------------------------------------------------
# book + finish


def _store_worker(url: str, table: str, worker: str, start, out) -> None:
    from dbdict_worker.store import Store

    store = Store.open(url)
    start.wait(60)
    n = 0
    t = time.perf_counter()
    while True:
        got = store.book(worker, "bench", tables=[table], n=1)
        if not got:
            break
        store.finish(got[0].token, Status.DONE)
        n += 1
    out.put((n, time.perf_counter() - t))
    store.close()


def capture_queue_sql(store, table: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """The SQL text and parameters that ``store.book`` and ``store.finish`` send to
    psycopg2, captured from one probe job in ``table`` (which must hold no other job)."""
    from dbdict_worker.db.connect import sent_statements

    store.enqueue("bench.noop", [{"probe": True}], table=table)
    with sent_statements(store.engine) as sent:
        (booking,) = store.book("bench-probe", "bench", tables=[table], n=1)
        booked = len(sent)
        store.finish(booking.token, Status.DONE)
    store.delete(tables=[table])
    # A store's first booking also looks up the table ids (cached from then on).
    if "SKIP LOCKED" not in sent[booked - 1][0] or len(sent) != booked + 1:
        raise RuntimeError(f"expected one statement each for book and finish: {sent}")
    return {"book": (sent[booked - 1][0], dict(sent[booked - 1][1])),
            "finish": (sent[booked][0], dict(sent[booked][1]))}


def _bare_worker(url: str, table_id: int, worker: str, sql: dict, start, out) -> None:
    """Book and finish with the statements in ``sql`` (the Store's, captured, or the minimal
    queue's), run bare with psycopg2."""
    book_sql, book_params = sql["book"]
    finish_sql, finish_params = sql["finish"]
    book_params = {k: (table_id if k.startswith("table_ids") else v)
                   for k, v in book_params.items()}
    book_params.update(new_worker=worker)
    bare = baselines.Bare.connect(url)
    start.wait(60)
    n = 0
    t = time.perf_counter()
    while True:
        rows = bare.run(book_sql, book_params)
        bare.commit()
        if not rows:
            break
        row = rows[0]
        if not bare.run(finish_sql, dict(finish_params, own_id=row["id"], own_worker=worker,
                                         own_attempt=row["attempts"])):
            raise RuntimeError(f"bare finish of job {row['id']} changed nothing")
        bare.commit()
        n += 1
    out.put((n, time.perf_counter() - t))
    bare.close()


def _run_processes(target: Callable, args_for: Callable[[int], tuple], procs: int) -> float:
    """Start ``procs`` processes together; the rate is jobs done over the slowest's time."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=target, args=(*args_for(k), start, out)) for k in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.5)  # let them connect before the clock starts (a fixed wait, not a check)
    start.set()
    results = [out.get(timeout=600) for _ in ps]
    for p in ps:
        p.join(60)
    done = sum(n for n, _ in results)
    return done / max(s for _, s in results)


def measure_book_finish(url: str, n: int, procs: int) -> dict[str, float]:
    """Jobs/s booked and finished by ``procs`` processes through the Store; next to the same
    statements run bare by psycopg2 (the ceiling: the ratio is the library's overhead), and
    to a minimal queue's claim and finish (no events, no state) for scale."""
    from dbdict_worker.db import maintenance, queries
    from dbdict_worker.store import Store

    states = [{"i": i} for i in range(n)]
    ours, same, minimal = _bench_table(), _bench_table(), _bench_table()
    with Store.open(url) as store:
        sql = capture_queue_sql(store, same)
        for table in (ours, same, minimal):
            store.enqueue("bench.noop", states, table=table)
        with store.engine.begin() as conn:
            ids = queries.table_ids(conn, [same, minimal])
            maintenance.analyze(conn, ["jobs"])
        full = store.target.url.render_as_string(hide_password=False)
        rate = _run_processes(_store_worker, lambda k: (full, ours, f"bench-s{k}"), procs)
        same_rate = _run_processes(
            _bare_worker, lambda k: (full, ids[same], f"bench-b{k}", sql), procs)
        minimal_rate = _run_processes(
            _bare_worker,
            lambda k: (full, ids[minimal], f"bench-m{k}", baselines.MINIMAL_QUEUE), procs)
        for table in (ours, same, minimal):
            done = store.counts(tables=[table])
            if done != {(table, Status.DONE): n}:
                raise RuntimeError(f"book+finish left {table} as {done}")
        _remove_tables(store, ours, same, minimal)
    return {f"book_finish_{procs}p_jobs_per_s": rate,
            f"bare_book_finish_{procs}p_jobs_per_s": same_rate,
            f"book_finish_{procs}p_ratio": rate / same_rate,
            f"minimal_book_finish_{procs}p_jobs_per_s": minimal_rate}


def measure_booking_with_history(url: str, finished: int, n: int) -> dict[str, float]:
    """Book+finish rate (1 process) with ``finished`` DONE jobs in the same table, next to
    the same rate measured first without them: finished jobs must not slow booking down."""
    from dbdict_worker.db import maintenance, queries
    from dbdict_worker.store import Store

    with Store.open(url) as store:
        full = store.target.url.render_as_string(hide_password=False)
        table = _bench_table()
        store.enqueue("bench.noop", [{"i": i} for i in range(n)], table=table)
        before = _run_processes(_store_worker, lambda k: (full, table, "bench-h0"), 1)
        with store.engine.begin() as conn:
            table_id = queries.table_ids(conn, [table])[table]
            maintenance.add_finished_jobs(conn, table_id, finished)
        maintenance.vacuum_analyze(store.engine, ["jobs"])
        store.enqueue("bench.noop", [{"i": i, "again": True} for i in range(n)], table=table)
        after = _run_processes(_store_worker, lambda k: (full, table, "bench-h1"), 1)
        with store.engine.begin() as conn:
            plan = maintenance.booking_plan(conn, [table_id])
        _remove_tables(store, table)
    return {"book_finish_with_history_jobs_per_s": after, "book_finish_empty_jobs_per_s": before,
            "history_plan_uses_ready_index": float("jobs_ready" in plan and "Sort" not in plan)}


# ---------------------------------------------------------------------------------------------
# through a real worker


def _worker(url: str, table: str, *args: str) -> tuple[subprocess.Popen, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
    env["DBDICT_DB"] = url
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "dbdict_worker.cli.worker", "start",
                             "--table", table, *args], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=tempfile.gettempdir())
    return proc, log


def _spawn_rate(n: int, parallel: int) -> float:
    """``python -c pass`` spawns per second, ``parallel`` at a time."""
    t = time.perf_counter()
    running: list[subprocess.Popen] = []
    for _ in range(n):
        if len(running) >= parallel:
            running.pop(0).wait()
        running.append(subprocess.Popen([sys.executable, "-c", "pass"]))
    for p in running:
        p.wait()
    return n / (time.perf_counter() - t)


def measure_end_to_end(url: str, n: int, slots: int = 2) -> dict[str, float]:
    """No-op jobs per second through ``dbdict-worker start --slots N --until-empty``."""
    from dbdict_worker.db import queries
    from dbdict_worker.store import Store

    table = _bench_table()
    with Store.open(url) as store:
        ids = store.enqueue("dbdict_worker.examples.noop", [{"i": i} for i in range(n)],
                            table=table).created
        full = store.target.url.render_as_string(hide_password=False)
        proc, log = _worker(full, table, "--slots", str(slots), "--until-empty",
                            "--workdir-base", tempfile.mkdtemp(prefix="dbdict-bench-"))
        code = proc.wait(600)
        with store.engine.connect() as conn:
            first, last = queries.booking_span(conn, ids)
        done = store.counts(tables=[table]).get((table, Status.DONE), 0)
        _remove_tables(store, table)
    if code != 0 or done != n:
        log.seek(0)
        raise RuntimeError(f"the bench worker failed ({code}, {done}/{n} done): {log.read()}")
    return {f"end_to_end_{slots}slots_jobs_per_s": n / (last - first).total_seconds(),
            f"bare_spawn_{slots}x_per_s": _spawn_rate(n, slots)}


def measure_pickup(url: str, samples: int) -> dict[str, float]:
    """Enqueue-to-experiment-start latency of an idle worker, p50 and p95 (ms)."""
    from dbdict_worker.store import Store

    table = _bench_table()
    latencies = []
    with Store.open(url) as store:
        store.enqueue("dbdict_worker.examples.noop", [{"warm": 1}], table=table)
        full = store.target.url.render_as_string(hide_password=False)
        proc, log = _worker(full, table, "--slots", "1", "--poll-interval", "30",
                            "--workdir-base", tempfile.mkdtemp(prefix="dbdict-bench-"))
        try:
            _wait(lambda: store.counts(tables=[table]).get((table, Status.DONE)) == 1, 60)
            _wait(lambda: _logged(log, "listening for new jobs"), 60)
            for i in range(samples):
                t0 = time.time()
                (job_id,) = store.enqueue("dbdict_worker.examples.stamp", [{"i": i}],
                                          table=table).created
                _wait(lambda j=job_id: store.job(j)[0].status == Status.DONE, 60)
                latencies.append((store.job(job_id)[1]["started_at"] - t0) * 1000)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            _remove_tables(store, table)
    latencies.sort()
    spawn = statistics.median(_spawn_ms() for _ in range(10))
    return {"pickup_p50_ms": statistics.median(latencies),
            "pickup_p95_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
            "bare_spawn_ms": spawn}


def _spawn_ms() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - t) * 1000


def _logged(log: Any, text: str) -> bool:
    log.seek(0)
    return text in log.read()


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("the bench worker did not get there in time")
        time.sleep(0.005)


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the benchmarks and print the table (or JSON); returns the exit code."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=os.environ.get("DBDICT_DB") or None,
                        help="PostgreSQL URL (env DBDICT_DB; the schema must exist)")
    parser.add_argument("--quick", action="store_true", help="small sizes (for CI)")
    parser.add_argument("--procs", default="4", help="comma-separated process counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (median)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=["dataframe"],
                        help="measure this figure alone (dataframe: Store.dataframe next to "
                             "the CSV export of the same jobs)")
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help="also measure booking with N finished jobs in the table "
                             "(e.g. 1000000)")
    args = parser.parse_args(argv)
    if not args.db:
        parser.error("give the database: --db URL or DBDICT_DB")
    try:
        return _run(args)
    except DbdictError as exc:  # e.g. no schema there: one line, like the other commands
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    n_enqueue, n_book, n_e2e, n_pickup = \
        (5_000, 1_000, 100, 10) if args.quick else (100_000, 10_000, 1_000, 50)
    procs = [int(x) for x in args.procs.split(",")]
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        measured = benchframes.measure_dataframe(args.db, sample_states(n_enqueue))
        if args.only == "dataframe":
            for k, v in measured.items():
                runs.setdefault(k, []).append(v)
            continue
        measured.update(measure_enqueue(args.db, n_enqueue))
        for p in procs:
            measured.update(measure_book_finish(args.db, n_book, p))
        measured.update(measure_end_to_end(args.db, n_e2e))
        measured.update(logcost.measure_log_cost(args.db, n_e2e))
        measured.update(measure_pickup(args.db, n_pickup))
        if args.history:
            measured.update(measure_booking_with_history(args.db, args.history, n_book // 2))
        for k, v in measured.items():
            runs.setdefault(k, []).append(v)
    figures = {k: statistics.median(v) for k, v in runs.items()}
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    if args.only == "dataframe":
        print("  ".join(benchframes.table_row(figures, n_enqueue)))
        return 0
    sizes = {"enqueue": n_enqueue, "book": n_book, "e2e": n_e2e}
    print("\n".join(format_table(figures, sizes=sizes, procs=procs, history=args.history)))
    return 0


def format_table(figures: dict[str, float], *, sizes: dict[str, int], procs: list[int],
                 history: int = 0) -> list[str]:
    """The figures as the lines of a table, each next to its baseline and its goal."""
    f = figures
    rows = [("figure", "value", "baseline (same run)", "goal"),
            (f"enqueue {sizes['enqueue']} x 10 params (jobs/s)",
             f"{f['enqueue_jobs_per_s']:.0f}",
             f"bare COPY {f['bare_copy_jobs_per_s']:.0f}", ">= 20000")]
    for p in procs:
        rows.append((f"book+finish {sizes['book']}, {p} procs (jobs/s)",
                     f"{f[f'book_finish_{p}p_jobs_per_s']:.0f}",
                     f"same SQL bare {f[f'bare_book_finish_{p}p_jobs_per_s']:.0f} "
                     f"(ratio {f[f'book_finish_{p}p_ratio']:.0%}); minimal queue "
                     f"{f[f'minimal_book_finish_{p}p_jobs_per_s']:.0f}",
                     "ratio >= 60%" if p == 4 else ""))
    rows += [
        (f"export {sizes['enqueue']} x 10 keys to CSV (s)", f"{f['export_csv_s']:.2f}",
         f"bare COPY of the rows out {f['bare_copy_out_s']:.2f} s", "<= 3 s"),
        (f"end to end {sizes['e2e']} no-op jobs, 2 slots (jobs/s)",
         f"{f['end_to_end_2slots_jobs_per_s']:.1f}",
         f"bare python -c pass x2 {f['bare_spawn_2x_per_s']:.1f}/s", ">= 100"),
        (f"end to end {sizes['e2e']} jobs printing a line, log capture on / off",
         f"{f['log_capture_ratio']:.0%}",
         f"on {f['end_to_end_logs_on_jobs_per_s']:.1f}/s, off "
         f"{f['end_to_end_logs_off_jobs_per_s']:.1f}/s (medians of 3, interleaved)", ">= 90%"),
        ("pickup latency p50 / p95 (ms)",
         f"{f['pickup_p50_ms']:.0f} / {f['pickup_p95_ms']:.0f}",
         f"bare python -c pass {f['bare_spawn_ms']:.0f} ms", "p50 <= 50"),
    ]
    if "dataframe_ratio" in f:
        rows.append(benchframes.table_row(f, sizes["enqueue"]))
    if history:
        rows.append((f"book+finish, {history} DONE in table (jobs/s)",
                     f"{f['book_finish_with_history_jobs_per_s']:.0f}",
                     f"same table empty {f['book_finish_empty_jobs_per_s']:.0f}; ready index: "
                     f"{bool(f['history_plan_uses_ready_index'])}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
            for r in rows]


if __name__ == "__main__":
    sys.exit(main())
