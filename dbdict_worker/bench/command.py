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
import queue
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
from dbdict_worker.bench import logcost, peers
from dbdict_worker.bench import reads as benchreads
from dbdict_worker.bench.samples import sample_states
from dbdict_worker.bench.table import CLAIM, format_table


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


def _core_consumer(url: str, table: str, worker: str, claim: int, start, out) -> None:
    """A consumer of the queue core: book up to ``claim`` jobs (a worker's free slots), run
    none, then write their ends and book the next claim in one statement and one commit
    (Store.finish_and_book), until the table is empty."""
    from dbdict_worker.db.models import Completion
    from dbdict_worker.store import Store

    store = Store.open(url)
    start.wait(60)
    n = 0
    t = time.perf_counter()
    got = store.book(worker, "bench", tables=[table], n=claim)
    while got:
        written, after = store.finish_and_book(
            [Completion(b.token, Status.DONE) for b in got], "bench", tables=[table], n=claim)
        if len(written) != len(got):
            raise RuntimeError(f"{worker}: {len(got) - len(written)} jobs lost ownership")
        n += len(got)
        got = after
    out.put((n, time.perf_counter() - t))
    store.close()


def measure_queue_core(url: str, n: int, consumers: int, claim: int) -> float:
    """Jobs/s of ``consumers`` processes booking ``claim`` jobs at a time (fencing token,
    history events and typed state with each booking, durable commits) and writing their
    ends with the next claim in one statement and commit, through the Store; the protocol of the peers' figure
    (:mod:`.peers`): ``n`` jobs enqueued first, consumers started together, the rate over
    the slowest."""
    from dbdict_worker.db import maintenance
    from dbdict_worker.store import Store

    table = _bench_table()
    with Store.open(url) as store:
        store.enqueue("bench.noop", [{"i": i} for i in range(n)], table=table)
        with store.engine.begin() as conn:
            maintenance.analyze(conn, ["jobs"])
        full = store.target.url.render_as_string(hide_password=False)
        rate = _run_processes(_core_consumer,
                              lambda k: (full, table, f"bench-c{k}", claim), consumers)
        done = store.counts(tables=[table])
        if done != {(table, Status.DONE): n}:
            raise RuntimeError(f"the queue core left {table} as {done}")
        _remove_tables(store, table)
    return rate


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
        # The Store's finish takes its jobs as arrays (a batch of one here), the minimal
        # queue's one job: each statement reads the names it has.
        if not bare.run(finish_sql, dict(finish_params, own_id=row["id"], own_worker=worker,
                                         own_attempt=row["attempts"], given_ids=[row["id"]],
                                         given_attempts=[row["attempts"]])):
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
    results = []
    deadline = time.monotonic() + 600
    while len(results) < len(ps):
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            failed = [p.exitcode for p in ps if p.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                for p in ps:
                    p.terminate()
                raise RuntimeError(f"a bench process failed (exit codes {failed}) or hung")
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
    parser.add_argument("--procs", default="4",
                        help="comma-separated process counts of the book 1 + finish 1 figure")
    parser.add_argument("--consumers", default=None,
                        help="comma-separated consumer counts of the queue core figure "
                             "(default 1,2,4; --quick: 2)")
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="also enqueue N jobs x 10 params (e.g. 1000000) and time the "
                             "reads over them (minutes)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (median)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=["dataframe"],
                        help="measure this figure alone (dataframe: Store.dataframe next to "
                             "the CSV export of the same jobs)")
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help="also measure booking with N finished jobs in the table "
                             "(e.g. 1000000)")
    args = parser.parse_args(argv)
    if args.consumers is None:
        args.consumers = "2" if args.quick else "1,2,4"
    if not args.db:
        parser.error("give the database: --db URL or DBDICT_DB")
    try:
        return _run(args)
    except DbdictError as exc:  # e.g. no schema there: one line, like the other commands
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def measure_queue_core_vs_peer(url: str, n: int, consumers: int) -> dict[str, float]:
    """The queue core (:func:`measure_queue_core`) claiming :data:`CLAIM` and 1 jobs at a
    time, each next to pgqueuer with its defaults and with a batch of 1, interleaved, when
    pgqueuer is installed (the ``bench`` extra); ratio: ours over pgqueuer's default."""
    key = f"{consumers}c"
    out = {f"queue_core_{key}_jobs_per_s": measure_queue_core(url, n, consumers, CLAIM)}
    if peers.pgqueuer_version():
        out[f"pgqueuer_{key}_jobs_per_s"] = peers.measure_pgqueuer_queue(url, n, consumers)
    out[f"queue_core_claim1_{key}_jobs_per_s"] = measure_queue_core(url, n, consumers, 1)
    if peers.pgqueuer_version():
        out[f"pgqueuer_batch1_{key}_jobs_per_s"] = peers.measure_pgqueuer_queue(
            url, n, consumers, batch_size=1)
        out[f"queue_core_{key}_ratio"] = (out[f"queue_core_{key}_jobs_per_s"]
                                          / out[f"pgqueuer_{key}_jobs_per_s"])
    return out


def measure_scale(url: str, n: int, small_rate: float) -> dict[str, float]:
    """Enqueue ``n`` jobs x 10 params into a table of their own (the rate next to
    ``small_rate``, the rate of the smaller enqueue of this run: flat means a ratio near
    1), then the reads of :mod:`.reads` over them; the table is removed after."""
    from dbdict_worker.db import maintenance
    from dbdict_worker.store import Store

    table = _bench_table()
    out: dict[str, float] = {}
    with Store.open(url) as store:
        seconds = 0.0
        step = 100_000
        for start in range(0, n, step):  # one enqueue per 100,000: the states fit in memory
            states = sample_states(min(step, n - start), offset=start)
            t = time.perf_counter()
            store.enqueue("bench.noop", states, table=table)
            seconds += time.perf_counter() - t
        out["scale_enqueue_jobs_per_s"] = n / seconds
        out["scale_enqueue_ratio"] = out["scale_enqueue_jobs_per_s"] / small_rate
        maintenance.vacuum_analyze(store.engine, ["jobs", "state"])
        full = store.target.url.render_as_string(hide_password=False)
        out.update({f"scale_{k}": v for k, v in benchreads.measure_reads(full, table).items()})
        _remove_tables(store, table)
    return out


def _run(args: argparse.Namespace) -> int:
    n_enqueue, n_book, n_e2e, n_pickup, n_core = \
        (5_000, 1_000, 100, 10, 1_000) if args.quick else (100_000, 10_000, 1_000, 50, 10_000)
    procs = [int(x) for x in args.procs.split(",")]
    consumers = [int(x) for x in args.consumers.split(",")]
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        measured = benchframes.measure_dataframe(args.db, sample_states(n_enqueue))
        if args.only == "dataframe":
            for k, v in measured.items():
                runs.setdefault(k, []).append(v)
            continue
        for c in consumers:
            measured.update(measure_queue_core_vs_peer(args.db, n_core, c))
        measured.update(measure_enqueue(args.db, n_enqueue))
        if peers.pgqueuer_version():
            measured["pgqueuer_enqueue_jobs_per_s"] = peers.measure_pgqueuer_enqueue(
                args.db, sample_states(n_enqueue))
            measured["enqueue_peer_ratio"] = (measured["enqueue_jobs_per_s"]
                                              / measured["pgqueuer_enqueue_jobs_per_s"])
        for p in procs:
            measured.update(measure_book_finish(args.db, n_book, p))
        measured.update(measure_end_to_end(args.db, n_e2e))
        measured["end_to_end_ratio"] = (measured["end_to_end_2slots_jobs_per_s"]
                                        / measured["bare_spawn_2x_per_s"])
        measured.update(logcost.measure_log_cost(args.db, n_e2e))
        measured.update(measure_pickup(args.db, n_pickup))
        if args.history:
            measured.update(measure_booking_with_history(args.db, args.history, n_book // 2))
        if args.scale:
            measured.update(measure_scale(args.db, args.scale, measured["enqueue_jobs_per_s"]))
        for k, v in measured.items():
            runs.setdefault(k, []).append(v)
    figures = {k: statistics.median(v) for k, v in runs.items()}
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    if args.only == "dataframe":
        print("  ".join(benchframes.table_row(figures, n_enqueue)))
        return 0
    sizes = {"enqueue": n_enqueue, "book": n_book, "e2e": n_e2e, "core": n_core,
             "scale": args.scale}
    print(f"pgqueuer: {peers.pgqueuer_version() or 'not installed (pip install dbdict-worker[bench])'}"
          f"; {args.repeat} round(s), medians")
    print("\n".join(format_table(figures, sizes=sizes, procs=procs, consumers=consumers,
                                 history=args.history)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
