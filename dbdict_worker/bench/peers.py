"""A peer queue measured next to ours: pgqueuer (PyPI ``pgqueuer``, on asyncpg).

    python -m dbdict_worker.bench.peers --db postgresql://postgres@127.0.0.1/postgres \\
        --n 10000 --consumers 1,2,4 [--batch-sizes default,1] [--enqueue 100000]

The protocol mirrors ``dbdict-worker bench``'s book+finish figure: ``n`` no-op jobs are
enqueued first, then ``C`` spawned processes (each with its own event loop and connection) wait
for one start signal and consume until the queue is empty; the rate is ``n`` over the slowest
process's time from the signal to its last acknowledged job. pgqueuer keeps its defaults
(durable tables, ``synchronous_commit`` untouched, batch size 10 unless given).

Each measurement runs in a scratch database of its own on the same server (``CREATE DATABASE``,
dropped afterwards even on failure), so the user's database never sees pgqueuer's schema.
pgqueuer and asyncpg are imported inside the functions: the package works without them (the
``bench`` extra brings them).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import statistics
import sys
import time
import traceback
import uuid
from typing import Any, Awaitable, Callable, TypeVar

from dbdict_worker.db.baselines import scratch_database

T = TypeVar("T")

ENTRYPOINT = "dbdict_bench_noop"
DB_PREFIX = "dbdict_bench_pgq"
ENQUEUE_BATCH = 10_000
# pgqueuer's QueueManager.run(batch_size=...) default, stated here for the report only.
PGQUEUER_DEFAULT_BATCH = 10


def pgqueuer_version() -> str | None:
    """The installed pgqueuer's version, or None when pgqueuer or asyncpg is missing."""
    from importlib import metadata

    try:
        metadata.version("asyncpg")
        return metadata.version("pgqueuer")
    except metadata.PackageNotFoundError:
        return None


def _scratch_name() -> str:
    return f"{DB_PREFIX}_{uuid.uuid4().hex[:10]}"


def _run(coro: Awaitable[T]) -> T:
    """Run ``coro`` on uvloop when installed (what pgqueuer's own ``pgq run`` does), else on
    asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


async def _with_queries(url: str, body: Callable[[Any], Awaitable[T]]) -> T:
    """Open an asyncpg connection to ``url`` and call ``body`` with pgqueuer's Queries."""
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    try:
        return await body(Queries(AsyncpgDriver(conn)))
    finally:
        await conn.close()


async def _install(queries: Any) -> None:
    """pgqueuer's schema with its default (durable) settings: ``pgq install`` in Python."""
    await queries.install()


async def _enqueue_batches(queries: Any, payloads: list[bytes], batch: int) -> float:
    """Enqueue ``payloads`` in calls of ``batch``; returns the seconds spent in the calls."""
    chunks = [payloads[i:i + batch] for i in range(0, len(payloads), batch)]
    args = [([ENTRYPOINT] * len(c), c, [0] * len(c)) for c in chunks]
    t = time.perf_counter()
    for entrypoints, chunk, priorities in args:
        await queries.enqueue(entrypoints, chunk, priorities)
    return time.perf_counter() - t


async def _queued(queries: Any) -> int:
    return sum(row.count for row in await queries.queue_size())


async def _successful(queries: Any) -> int:
    """Jobs pgqueuer logged as successful (its log folded into its statistics table)."""
    stats = await queries.log_statistics(limit=None)
    return sum(row.count for row in stats
               if row.entrypoint == ENTRYPOINT and row.status == "successful")


# ---------------------------------------------------------------------------------------------
# consumers


def _consumer(url: str, batch_size: int | None, start: Any, ready: Any, out: Any) -> None:
    """One consumer process: connect, report ready, wait for the start, drain the queue,
    put (pid, job ids run, seconds from the start to the last acknowledgement)."""
    try:
        _run(_consume(url, batch_size, start, ready, out))
    except BaseException:  # the parent must not wait for a result that will never come
        out.put(("error", os.getpid(), traceback.format_exc()))


async def _consume(url: str, batch_size: int | None, start: Any, ready: Any, out: Any) -> None:
    import asyncpg
    from pgqueuer import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(url)
    try:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))
        ran: list[int] = []

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Job) -> None:
            ran.append(job.id)

        options: dict[str, Any] = {"mode": QueueExecutionMode.drain}
        if batch_size is not None:
            options["batch_size"] = batch_size
        ready.put(os.getpid())
        if not start.wait(120):
            raise RuntimeError("no start signal within 120 s")
        t = time.perf_counter()
        # Returns once the queue has no queued job left and this manager's own jobs are done;
        # leaving it flushes the status-log buffer, i.e. the last acknowledgement is in.
        await qm.run(**options)
        seconds = time.perf_counter() - t
    finally:
        await conn.close()
    out.put(("done", os.getpid(), ran, seconds))


def _gather(out: Any, procs: list[Any], want: int, timeout: float) -> list[tuple]:
    """``want`` messages from ``out``; fails at once when a process died without one."""
    got: list[tuple] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        try:
            msg = out.get(timeout=0.2)
        except queue_mod.Empty:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgqueuer consumers: {len(got)}/{want} answered "
                                   f"within {timeout:.0f} s") from None
            dead = [p.pid for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"pgqueuer consumer(s) {dead} died") from None
            continue
        if msg[0] == "error":
            raise RuntimeError(f"pgqueuer consumer {msg[1]} failed:\n{msg[2]}")
        got.append(msg)
    return got


def _run_consumers(url: str, consumers: int, batch_size: int | None,
                   timeout: float) -> list[tuple]:
    """Start ``consumers`` spawned processes, release them together once all are connected,
    return their ("done", pid, ids, seconds) results."""
    ctx = mp.get_context("spawn")
    start, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_consumer, args=(url, batch_size, start, ready, out),
                         daemon=True) for _ in range(consumers)]
    try:
        for p in procs:
            p.start()
        # Ready messages share no queue with errors: watch the error queue while waiting.
        deadline = time.monotonic() + 120
        readied = 0
        while readied < consumers:
            try:
                ready.get(timeout=0.2)
                readied += 1
            except queue_mod.Empty:
                if not out.empty():
                    _gather(out, procs, 1, 1)  # raises with the child's traceback
                if time.monotonic() > deadline or any(p.exitcode is not None for p in procs):
                    raise RuntimeError(f"pgqueuer consumers: {readied}/{consumers} connected")
        start.set()
        results = _gather(out, procs, consumers, timeout)
        for p in procs:
            p.join(30)
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(10)


def measure_pgqueuer_queue(admin_url: str, n: int, consumers: int, *,
                           batch_size: int | None = None, timeout: float = 600) -> float:
    """Jobs/s of pgqueuer draining ``n`` pre-enqueued no-op jobs with ``consumers`` processes
    (pgqueuer's default batch size unless ``batch_size`` is given), in a scratch database.
    Raises RuntimeError unless every job ran exactly once and was logged as successful."""
    with scratch_database(admin_url, _scratch_name()) as url:
        async def prepare(q: Any) -> list[int]:
            await _install(q)
            ids: list[int] = []
            payloads = [json.dumps({"i": i}).encode() for i in range(n)]
            for i in range(0, n, ENQUEUE_BATCH):
                chunk = payloads[i:i + ENQUEUE_BATCH]
                ids += await q.enqueue([ENTRYPOINT] * len(chunk), chunk, [0] * len(chunk))
            return ids

        ids = asyncio.run(_with_queries(url, prepare))
        results = _run_consumers(url, consumers, batch_size, timeout)

        ran = [job_id for _, _, job_ids, _ in results for job_id in job_ids]

        async def check(q: Any) -> tuple[int, int]:
            return await _successful(q), await _queued(q)

        successful, left = asyncio.run(_with_queries(url, check))
    if len(ran) != n or set(ran) != set(ids) or successful != n or left:
        raise RuntimeError(
            f"pgqueuer: {n} jobs enqueued, {len(ran)} runs of {len(set(ran))} distinct jobs, "
            f"{successful} logged successful, {left} left in the queue")
    return n / max(seconds for *_, seconds in results)


def measure_pgqueuer_enqueue(admin_url: str, states: list[dict[str, Any]], *,
                             batch: int = ENQUEUE_BATCH) -> float:
    """Jobs/s of pgqueuer's batch enqueue (``Queries.enqueue`` with lists, ``batch`` jobs per
    call) of ``states`` JSON-encoded as payloads, into a fresh schema in a scratch database.
    Only the enqueue calls are timed (not the JSON encoding)."""
    payloads = [json.dumps(s).encode() for s in states]
    with scratch_database(admin_url, _scratch_name()) as url:
        async def body(q: Any) -> tuple[float, int]:
            await _install(q)
            seconds = await _enqueue_batches(q, payloads, batch)
            return seconds, await _queued(q)

        seconds, queued = asyncio.run(_with_queries(url, body))
    if queued != len(states):
        raise RuntimeError(f"pgqueuer enqueue: {queued} of {len(states)} jobs in the queue")
    return len(states) / seconds


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    """Print pgqueuer's figures (jobs/s) for the given sizes; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=os.environ.get("DBDICT_DB") or None,
                        help="a PostgreSQL URL on the server to measure (scratch databases "
                             "are created and dropped there)")
    parser.add_argument("--n", type=int, default=10_000, help="jobs drained per figure")
    parser.add_argument("--consumers", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--batch-sizes", default="default,1",
                        help="comma-separated dequeue batch sizes ('default' = pgqueuer's)")
    parser.add_argument("--enqueue", type=int, default=100_000,
                        help="states (x10 params) for the enqueue figure; 0 skips it")
    parser.add_argument("--repeat", type=int, default=1,
                        help="interleaved rounds; each figure is the median")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.db:
        parser.error("give the database: --db URL or DBDICT_DB")
    version = pgqueuer_version()
    if version is None:
        print("error: pgqueuer/asyncpg not installed (pip install 'dbdict-worker[bench]')",
              file=sys.stderr)
        return 2
    runs: dict[str, list[float]] = {}
    states = None
    if args.enqueue:
        from dbdict_worker.bench.samples import sample_states

        states = sample_states(args.enqueue)
    for _ in range(args.repeat):
        if states:
            runs.setdefault("pgqueuer_enqueue_jobs_per_s", []).append(
                measure_pgqueuer_enqueue(args.db, states))
        for size in args.batch_sizes.split(","):
            batch = None if size == "default" else int(size)
            label = f"batch{PGQUEUER_DEFAULT_BATCH if batch is None else batch}"
            for c in (int(x) for x in args.consumers.split(",")):
                runs.setdefault(f"pgqueuer_drain_{c}p_{label}_jobs_per_s", []).append(
                    measure_pgqueuer_queue(args.db, args.n, c, batch_size=batch))
    figures = {k: statistics.median(v) for k, v in runs.items()}
    if args.json:
        print(json.dumps({"pgqueuer": version, **figures}, indent=2))
    else:
        print(f"pgqueuer {version}")
        for k, v in figures.items():
            print(f"{k:45s} {v:12,.0f}")
    return 0


if __name__ == "__main__":
    # SIGTERM as an exception, so that the scratch databases' finally clauses drop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sys.exit(main())
