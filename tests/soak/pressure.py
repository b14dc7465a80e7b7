"""Pressure scenarios: what booking does while the database is under a known kind of stress.

    python -m tests.soak.pressure --scenario NAME|all [--minutes M] [--rate R] [--jobs N]
                                  [--before S] [--after S] [--workers W] [--slots K] ...

Each scenario starts a private PostgreSQL and real workers (:mod:`tests.soak.harness`), feeds
them a steady stream of short loop jobs (``--rate`` jobs/s, enqueued in the background; plus a
``--jobs`` backlog at the start), and measures a *before* phase, the *pressure* phase and an
*after* phase:

- ``idle_xact``: one session opens a transaction, takes an xid and reads the jobs table, then
  sits idle for the whole phase: its snapshot holds the xmin, so vacuum reclaims no dead row;
- ``rr_scans``: 4 REPEATABLE READ sessions scanning the hot tables in a loop;
- ``terminate``: ``pg_terminate_backend`` of every session of the workers' role, every second;
- ``idle_conns``: 300 idle sessions of another role held open against a server whose
  ``max_connections`` leaves the workers only a few;
- ``netcut``: one worker reaches PostgreSQL through a TCP proxy that is cut for longer than the
  lease and restored (``--silent-cut``: the bytes stop but the sockets stay open, as when a
  cable is pulled), then PostgreSQL restarts (down longer than the lease).

Throughput is the DONE finishes per second within a phase, and booking latency the time from a
job becoming ready (enqueued, or given back: a ``requeued``, ``unbooked`` or ``lost`` event)
to its ``booked`` event, grouped by the phase it was booked in: both from the ``events`` the
workers wrote (server clock). After the last phase the feeder stops, the workers finish what
is queued and stop, and the soak's checks (:mod:`tests.soak.checks`) run: every job DONE
exactly once with an uninterrupted run's result, consistent histories, no loss of a live
worker's job (the cut worker's, whose lease expired, excepted), no orphan. One table row per
scenario; exit 0 when every check passed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import threading
import time
from typing import Any, Callable

import sqlalchemy as sa

from tests.soak import checks
from tests.soak.harness import (LOOP, TICK, WORKER_ROLE, Fleet, WorkerSettings, add_run_options,
                                cli_prelude)
from tests.soak.pressure_report import HEADER, Phase, PressureReport, percentile, table_row
from tests.support.pgcluster import server_unavailable
from tests.support.proxy import Proxy
from dbdict_worker.constants import Status
from dbdict_worker.store import Store

TABLE = "pressure"
#: The role of the idle sessions of ``idle_conns`` (not the workers', not a superuser).
IDLE_ROLE = "dbdict_soak_idle"
SCENARIOS = ("idle_xact", "rr_scans", "terminate", "idle_conns", "netcut")
#: Minutes of pressure when ``--minutes`` is not given.
DEFAULT_MINUTES = {"idle_xact": 10.0, "rr_scans": 1.0, "terminate": 1.0, "idle_conns": 1.0,
                   "netcut": 1.0}


@dataclasses.dataclass
class PressureConfig:
    """One scenario's run."""

    scenario: str
    minutes: float | None = None  # None: DEFAULT_MINUTES
    before: float = 30.0
    after: float = 60.0
    rate: float = 10.0  # jobs enqueued per second, steadily
    jobs: int = 0  # a backlog enqueued before the workers start
    workers: int = 4
    slots: int = 2
    lease: float = 3.0
    seed: int | None = None
    durable: bool = True
    idle_conns: int = 300
    max_connections: int = 310  # with 300 idle: a handful left for the workers
    scanners: int = 4
    pg_down: float = 5.0
    silent_cut: bool = False  # netcut: bytes stop flowing, sockets stay open
    drain_limit: float = 180.0  # to finish the queue once the feeder stops
    keep: bool = False
    root: str | None = None

    def pressure_s(self) -> float:
        return 60.0 * (self.minutes if self.minutes is not None
                       else DEFAULT_MINUTES[self.scenario])


class _Feeder(threading.Thread):
    """Enqueues ``rate`` jobs a second (what is due since the start, so an outage is caught up
    afterwards); ``acked`` holds the ``i`` of every job whose enqueue committed."""

    def __init__(self, url: str, rate: float, rng: random.Random, start_i: int) -> None:
        super().__init__(name="feeder", daemon=True)
        self.url, self.rate, self.rng = url, rate, rng
        self.next_i = start_i
        self.acked: set[int] = set()
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        t0, sent = time.monotonic(), 0
        with Store.open(self.url, retry_seconds=2) as store:
            while not self.halt.wait(0.25):
                due = int(self.rate * (time.monotonic() - t0)) - sent
                if due <= 0:
                    continue
                batch = job_params(self.rng, range(self.next_i, self.next_i + due))
                self.next_i += due  # a failed batch's numbers are never reused
                try:
                    store.enqueue(LOOP, batch, table=TABLE, max_attempts=1000)
                except Exception:  # noqa: BLE001 - the database is under pressure: catch up
                    self.errors += 1
                    continue
                sent += due
                self.acked.update(p["i"] for p in batch)


def job_params(rng: random.Random, numbers: range) -> list[dict[str, Any]]:
    """Short loop jobs (1-3 steps of 10 ms): booking, not the job, dominates."""
    return [{"total": rng.randint(1, 3), "sleep": 0.01, "i": i} for i in numbers]


class Pressure:
    """One scenario's run; :meth:`run` always cleans up, whatever happens."""

    def __init__(self, cfg: PressureConfig, say: Callable[[str], None]) -> None:
        if cfg.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {cfg.scenario!r}")
        self.cfg, self.say = cfg, say
        seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 30)
        self.rng = random.Random(seed)
        self.report = PressureReport(cfg.scenario, seed, cfg.pressure_s())
        self.fleet = Fleet(cfg.workers, WorkerSettings(cfg.slots, cfg.lease),
                           prefix=f"dbdict-pressure-{cfg.scenario}-", root=cfg.root,
                           fail=self._fail)
        self.engine: sa.Engine | None = None
        self.url = ""
        self.proxy: Proxy | None = None
        self.bounds: dict[str, tuple[float, float]] = {}  # phase -> wall-clock window
        self.ready_seen: list[tuple[float, int]] = []  # (time, ready jobs), every tick
        self._held: list[Any] = []  # the scenario's sessions
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counter = 0
        self._holder_pid = 0
        self._failed: set[int] = set()  # jobs not DONE with the right result

    def _fail(self, text: str) -> None:
        self.report.failures.append(text)
        self.say(f"pressure: FAIL: {text}")

    # --- the whole run -----------------------------------------------------------------------

    def run(self) -> PressureReport:
        cfg = self.cfg
        feeder: _Feeder | None = None
        try:
            self._setup()
            feeder = _Feeder(self.url, cfg.rate, self.rng, cfg.jobs)
            feeder.start()
            self._warm_up()
            self._phase("before", cfg.before)
            self._pressure_on()
            self._phase("during", cfg.pressure_s(), tick=self._pressure_tick)
            self._pressure_off()
            self._phase("after", cfg.after)
            feeder.halt.set()
            feeder.join(60)
            self._drain()
            self.fleet.stop_workers()
            self.report.orphans = self.fleet.orphans()
            self._verify(feeder)
            self._measure()
        finally:
            if feeder is not None:
                feeder.halt.set()
            self._release_held()
            if self.proxy is not None:
                self.proxy.close()
            self.report.run_dir = self.fleet.cleanup(cfg.keep)
        return self.report

    def _setup(self) -> None:
        cfg = self.cfg
        settings = {"max_connections": str(cfg.max_connections)} \
            if cfg.scenario == "idle_conns" else None
        self.url = self.fleet.start_server(durable=cfg.durable, settings=settings,
                                           worker_role=True)
        self.engine = self.fleet.engine
        assert self.engine is not None and self.fleet.server is not None
        if cfg.scenario == "idle_conns":
            with self.engine.begin() as conn:
                conn.exec_driver_sql(
                    f"CREATE ROLE {IDLE_ROLE} LOGIN PASSWORD '{self.fleet.server.password}'")
        if cfg.jobs:
            with Store.open(self.url, retry_seconds=60) as store:
                store.enqueue(LOOP, job_params(self.rng, range(cfg.jobs)), table=TABLE,
                              max_attempts=1000)
        for k in range(cfg.workers):
            if k == 0 and cfg.scenario == "netcut":
                assert self.fleet.worker_url is not None
                self.proxy = Proxy(self.fleet.worker_url)
                self.fleet.start_worker(k, url=self.proxy.url)
            else:
                self.fleet.start_worker(k)
        self.say(f"pressure: {cfg.scenario}: {cfg.workers} workers x {cfg.slots} slots, "
                 f"{cfg.rate:g} jobs/s, PostgreSQL on port {self.fleet.server.port} in "
                 f"{self.fleet.dir}")

    def _count(self, *statuses: Status) -> int | None:
        """Jobs in ``statuses`` now (None while the database does not answer)."""
        assert self.engine is not None
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM jobs WHERE status = ANY(:s)"),
                                    {"s": [int(st) for st in statuses]}).scalar_one()
        except sa.exc.OperationalError:
            return None

    def _ready(self) -> int | None:
        """Jobs waiting to be booked (None while the database does not answer)."""
        return self._count(Status.START)

    def _warm_up(self) -> None:
        """Until the workers finish jobs and keep up (bounded): the before phase measures a
        running queue, not the workers' start."""
        deadline = time.monotonic() + 90
        capacity = self.cfg.workers * self.cfg.slots
        while (self._count(Status.DONE) or 0) < 2 * capacity or (self._ready() or 0) > capacity:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers finished no job within 90 s of their start")
            self.fleet.service(time.monotonic())
            time.sleep(TICK)

    def _phase(self, name: str, seconds: float,
               tick: Callable[[float], None] | None = None) -> None:
        """Run ``seconds`` of phase ``name``: look at the queue, keep the workers, and call
        ``tick`` (with the seconds since the phase began) every TICK."""
        start = time.time()
        self.say(f"pressure: {self.cfg.scenario}: {name} ({seconds:g} s)")
        while (elapsed := time.time() - start) < seconds:
            if tick is not None:
                tick(elapsed)
            ready = self._ready()
            if ready is not None:
                self.ready_seen.append((time.time(), ready))
            self.fleet.service(time.monotonic())
            time.sleep(TICK)
        self.bounds[name] = (start, time.time())
        self._snapshot(f"end of {name}")

    def _snapshot(self, when: str) -> None:
        """Dead and live tuples of jobs and events now (vacuum's view)."""
        assert self.engine is not None
        try:
            with self.engine.connect() as conn:
                dead = checks.dead_tuples(conn)
        except sa.exc.OperationalError:
            return
        self.report.dead_tuples[when] = {f"{t} {k}": d[k] for t, d in dead.items()
                                         if t in ("jobs", "events") for k in ("dead", "live")}

    def _drain(self) -> None:
        """Until every job is DONE (bounded by ``drain_limit``), keeping the workers."""
        deadline = time.monotonic() + self.cfg.drain_limit
        while True:
            open_ = self._count(Status.START, Status.RUNNING)
            if open_ == 0:
                return
            if time.monotonic() > deadline:
                self._fail(f"{open_} job(s) still queued or running {self.cfg.drain_limit:g} s "
                           "after the feeder stopped")
                return
            self.fleet.service(time.monotonic())
            time.sleep(TICK)

    # --- the pressure ------------------------------------------------------------------------

    def _pressure_on(self) -> None:
        cfg, engine = self.cfg, self.engine
        assert engine is not None and self.fleet.server is not None
        if cfg.scenario == "idle_xact":
            conn = engine.connect()
            conn.begin()
            xid, self._holder_pid = conn.execute(sa.text(
                "SELECT txid_current(), pg_backend_pid()")).one()
            conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one()
            self._held.append(conn)
            self.report.notes.append(f"xid {xid} held idle in transaction")
        elif cfg.scenario == "rr_scans":
            for n in range(cfg.scanners):
                t = threading.Thread(target=self._scan, name=f"scan{n}", daemon=True)
                t.start()
                self._threads.append(t)
        elif cfg.scenario == "idle_conns":
            idle_url = self.url.replace(f"//{self.fleet.server.user}:", f"//{IDLE_ROLE}:", 1)
            idle = sa.create_engine(idle_url, poolclass=sa.pool.NullPool)
            refused = self._hold_idle(idle)
            # The workers' pools keep the sessions they had: cut those once, and take what
            # they freed up to the count, so that they must connect again to a server with a
            # few slots left.
            cut = self._terminate_workers()
            refused = self._hold_idle(idle) or refused
            self.report.notes.append(f"{len(self._held)} idle sessions held "
                                     f"(max_connections {cfg.max_connections}); {cut} worker "
                                     f"sessions cut" + (f"; refused: {refused}" if refused else ""))
        self._mark = time.time()

    def _pressure_tick(self, elapsed: float) -> None:
        cfg = self.cfg
        assert self.engine is not None and self.fleet.server is not None
        if cfg.scenario == "terminate" and time.time() - self._mark >= 1.0:
            self._mark = time.time()
            self._counter += self._terminate_workers()
        elif cfg.scenario == "netcut":
            assert self.proxy is not None
            cut_s = max(3 * cfg.lease, 10.0)
            if self._counter == 0:
                # Cut while the worker holds a job (bounded): the lease must run out on one.
                if elapsed < 5.0 and not self._worker0_busy():
                    return
                self.proxy.cut(silent=cfg.silent_cut)
                self._counter = 1
                self.say(f"pressure: netcut: worker 0 cut off for {cut_s:g} s")
            elif self._counter == 1 and elapsed >= cut_s:
                self.proxy.restore()
                self._counter = 2
                self.say("pressure: netcut: worker 0 reconnected")
            elif self._counter == 2 and elapsed >= cut_s + 0.3 * (cfg.pressure_s() - cut_s):
                self._counter = 3
                self.say(f"pressure: netcut: restarting PostgreSQL (down {cfg.pg_down:g} s)")
                t = time.monotonic()
                self.report.notes.append(f"PostgreSQL stopped at +{elapsed:.1f} s")
                self.fleet.server.restart(down_seconds=cfg.pg_down)
                how = "silently " if cfg.silent_cut else ""
                self.report.notes.append(f"worker 0 cut {how}{cut_s:g} s (lease {cfg.lease:g} s); "
                                         f"PostgreSQL down {time.monotonic() - t:.1f} s")

    def _hold_idle(self, idle: sa.Engine) -> str:
        """Open idle sessions until ``idle_conns`` are held; the refusal that stopped it."""
        while len(self._held) < self.cfg.idle_conns:
            try:
                self._held.append(idle.connect())
            except sa.exc.OperationalError as e:
                return str(e.orig).strip().splitlines()[0]
        return ""

    def _terminate_workers(self) -> int:
        """pg_terminate_backend of every session of the workers' role; how many."""
        assert self.engine is not None
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE usename = :role"), {"role": WORKER_ROLE}).scalar_one()
        except sa.exc.OperationalError:
            return 0

    def _worker0_busy(self) -> bool:
        """Whether worker 0 (the one behind the proxy) has a job RUNNING."""
        assert self.engine is not None
        w = self.fleet.workers[0]
        if w is None:
            return False
        try:
            with self.engine.connect() as conn:
                return bool(conn.execute(sa.text(
                    "SELECT count(*) FROM jobs j JOIN workers w ON w.id = j.worker_id "
                    "WHERE j.status = :s AND w.pid = :pid"),
                    {"s": int(Status.RUNNING), "pid": w.proc.pid}).scalar_one())
        except sa.exc.OperationalError:
            return False

    def _scan(self) -> None:
        """One REPEATABLE READ session reading every hot table, again and again."""
        assert self.engine is not None
        while not self._halt.is_set():
            try:
                with self.engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                    while not self._halt.is_set():
                        with conn.begin():
                            for table in checks.HOT_TABLES:
                                conn.execute(sa.text(f"SELECT count(*) FROM {table}"))
                        self._counter += 1
            except sa.exc.OperationalError:
                self._halt.wait(0.5)

    def _pressure_off(self) -> None:
        cfg = self.cfg
        self._snapshot("pressure released")
        if cfg.scenario == "idle_xact":
            try:  # asked from another session: the holder's own age() would be its xid's
                assert self.engine is not None
                with self.engine.connect() as conn:
                    age = conn.execute(sa.text(
                        "SELECT age(backend_xid) FROM pg_stat_activity WHERE pid = :pid"),
                        {"pid": self._holder_pid}).scalar_one()
                self.report.notes.append(f"held xid {age} transactions old at release")
            except sa.exc.SQLAlchemyError:
                pass
        elif cfg.scenario == "rr_scans":
            self.report.notes.append(f"{cfg.scanners} scanners, {self._counter} scans")
        elif cfg.scenario == "terminate":
            self.report.notes.append(f"{self._counter} worker sessions terminated")
        elif cfg.scenario == "netcut" and self._counter < 3:
            self._fail("the netcut timeline did not complete (pressure too short?)")
            if self.proxy is not None:
                self.proxy.restore()
        self._release_held()
        self._halt.set()
        for t in self._threads:
            t.join(30)
        self.report.backlog_at_end = self._ready() or 0

    def _release_held(self) -> None:
        for conn in self._held:
            try:
                conn.close()
            except sa.exc.SQLAlchemyError:
                pass
        self._held = []

    # --- the end -----------------------------------------------------------------------------

    def _verify(self, feeder: _Feeder) -> None:
        """The soak's checks, with the jobs the database holds; an acknowledged enqueue
        missing from it is lost, a number enqueued twice is duplicated."""
        assert self.engine is not None
        verdict, report = self.report.verdict, self.report
        with Store.open(self.url, retry_seconds=60) as store:
            with_state = store.jobs_with_state()
            attempts = {j.id: j.attempts for j, _ in with_state}
        created = {j.id: st.get("i") for j, st in with_state}
        numbers = list(created.values())
        enqueued = set(range(self.cfg.jobs)) | feeder.acked
        missing = enqueued - set(numbers)
        report.enqueued, report.enqueue_errors = len(created), feeder.errors
        for i in sorted(missing)[:5]:
            verdict.problem(f"the job numbered {i} was enqueued but is not in the database")
        twice = len(numbers) - len(set(numbers))
        if twice:
            verdict.problem(f"{twice} job number(s) are in the database twice")
        self._failed = checks.verify_jobs(with_state, created, verdict)
        with self.engine.connect() as conn:
            excused = self.fleet.killed_worker_ids(conn)
            if self.cfg.scenario == "idle_conns":
                # A worker that found no free slot for longer than the lease could not renew:
                # its jobs' losses are due (as a cut worker's); all else is checked.
                excused |= set(conn.execute(sa.text("SELECT id FROM workers")).scalars())
                refused = sum(log.read_text(errors="replace").count("too many clients")
                              + log.read_text(errors="replace").count("slots are reserved")
                              for log in (self.fleet.dir / "logs").glob("*.log"))
                report.notes.append(f"{refused} connection refusals in the workers' logs")
            if self.proxy is not None:  # the cut worker's leases expired: its losses are due
                pids = {w.proc.pid for w in self.fleet.workers[:1] if w is not None}
                cut = {wid for wid, pid in conn.execute(
                    sa.text("SELECT id, pid FROM workers")).all() if pid in pids}
                report.notes.append(f"cut worker {', '.join(sorted(cut))}")
                excused |= cut
            checks.verify_events(conn, created, excused, verdict, attempts)
        report.lost = verdict.lost + len(missing)
        report.duplicated = verdict.duplicated + twice
        self.report.notes.append(
            f"{verdict.lost_events} lost events ({verdict.spurious_losses} of live workers), "
            f"{verdict.worker_requeues} requeued by workers, {verdict.unbookings} unbooked")

    def _measure(self) -> None:
        """Throughput and booking latency per phase, from the events."""
        assert self.engine is not None
        with self.engine.connect() as conn:
            finished = conn.execute(sa.text(
                "SELECT extract(epoch FROM at)::float8 FROM events "
                "WHERE kind = 'finished' AND detail LIKE 'DONE%'")).scalars().all()
            booked = conn.execute(sa.text(
                "SELECT extract(epoch FROM e.at)::float8, extract(epoch FROM coalesce("
                "  (SELECT max(p.at) FROM events p WHERE p.job_id = e.job_id AND p.id < e.id"
                "     AND p.kind IN ('requeued', 'unbooked', 'lost')), j.created_at))::float8 "
                "FROM events e JOIN jobs j ON j.id = e.job_id WHERE e.kind = 'booked'")).all()
            lost_at = conn.execute(sa.text(
                "SELECT extract(epoch FROM at)::float8 FROM events WHERE kind = 'lost' "
                "ORDER BY id")).scalars().all()
            last_booked = conn.execute(sa.text(
                "SELECT job_id, extract(epoch FROM max(at))::float8 FROM events "
                "WHERE kind = 'booked' AND job_id = ANY(:ids) GROUP BY job_id"),
                {"ids": sorted(self._failed)}).all()
        for name, (start, end) in self.bounds.items():
            waits = sorted(b - r for b, r in booked if start <= b < end)
            self.report.phases[name] = Phase(
                seconds=round(end - start, 1),
                done=sum(start <= f < end for f in finished), bookings=len(waits),
                p50_ms=percentile(waits, 0.50), p95_ms=percentile(waits, 0.95))
        if self._failed:
            where = [next((n for n, (a, b) in self.bounds.items() if a <= t < b), "outside")
                     for _, t in last_booked]
            self.report.notes.append("not DONE right, by the phase of their last booking: "
                                     + ", ".join(f"{n} {where.count(n)}" for n in
                                                 ("before", "during", "after", "outside")))
        if lost_at:
            t0 = self.bounds["during"][0]
            self.report.notes.append("lost events at " + ", ".join(
                f"{t - t0:+.1f}" for t in lost_at) + " s from the start of the pressure")
        start = self.bounds["after"][0]
        level = max([n for t, n in self.ready_seen if t < self.bounds["before"][1]] or [0])
        back = [t for t, n in self.ready_seen if t >= start and n <= level]
        self.report.recovered_after_s = round(back[0] - start, 1) if back else None


def run_pressure(cfg: PressureConfig, say: Callable[[str], None] | None = None) -> PressureReport:
    """Run one scenario (see the module docstring); ``say`` gets progress lines (default:
    stderr). Raises RuntimeError if no private PostgreSQL can be started here."""
    why = server_unavailable()
    if why:
        raise RuntimeError(f"cannot start a private PostgreSQL: {why}")
    return Pressure(cfg, say or (lambda text: print(text, file=sys.stderr, flush=True))).run()


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.soak.pressure``; exit 0 when every check of every scenario passed, 1
    otherwise, 2 if no private PostgreSQL can be started, 130 when interrupted."""
    p = argparse.ArgumentParser(
        prog="python -m tests.soak.pressure",
        description="Booking under database pressure: throughput and booking latency before, "
                    "during and after; then every job must be DONE exactly once.")
    p.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all"])
    p.add_argument("--minutes", type=float, help="minutes of pressure (default: 10 for "
                   "idle_xact, 1 for the others)")
    p.add_argument("--before", type=float, default=30.0, metavar="S",
                   help="seconds measured before the pressure (default 30)")
    p.add_argument("--after", type=float, default=60.0, metavar="S",
                   help="seconds measured after it (default 60)")
    p.add_argument("--rate", type=float, default=10.0, help="jobs enqueued per second")
    p.add_argument("--jobs", type=int, default=0, help="a backlog enqueued at the start")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--lease", type=float, default=3.0)
    p.add_argument("--max-connections", type=int, default=310,
                   help="the server's max_connections in idle_conns (default 310)")
    p.add_argument("--silent-cut", action="store_true",
                   help="netcut: stop the bytes, keep the sockets open (a pulled cable)")
    p.add_argument("--seed", type=int)
    add_run_options(p)
    a = p.parse_args(argv)
    refused = cli_prelude(prog="pressure")
    if refused is not None:
        return refused
    reports = []
    try:
        for name in SCENARIOS if a.scenario == "all" else (a.scenario,):
            cfg = PressureConfig(name, minutes=a.minutes, before=a.before, after=a.after,
                                 rate=a.rate, jobs=a.jobs, workers=a.workers, slots=a.slots,
                                 lease=a.lease, max_connections=a.max_connections,
                                 silent_cut=a.silent_cut,
                                 seed=a.seed, durable=not a.fast, keep=a.keep, root=a.root)
            reports.append(run_pressure(cfg))
            print(table_row(reports[-1]), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("pressure: interrupted; workers and server stopped", file=sys.stderr)
        return 130
    if a.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        print("\n".join([HEADER, *(table_row(r) for r in reports)]))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
