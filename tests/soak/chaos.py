"""A chaos soak: real workers, a real private PostgreSQL, and a driver that breaks things.

    python -m tests.soak.chaos --jobs 20000 --workers 4 --slots 2 [--duration-limit S]
                                  [--seed N] [--fast] [--keep] [--json]

It starts a PostgreSQL server of its own (``initdb``/``pg_ctl`` from the machine's PostgreSQL,
as the ``postgres`` user when run as root, on 127.0.0.1 only, durable unless ``--fast``),
enqueues N short runs of the resumable example ``dbdict_worker.examples.loop`` (a quarter of
them, where it exists, of ``dbdict_worker.examples.checkpoint``, whose weights live in a
checkpoint file that must agree with its state), starts W
``dbdict-worker start`` processes, and while they work:

- every few seconds kills a random worker with SIGKILL or SIGTERM and starts it again;
- restarts PostgreSQL once (down longer than the lease), a quarter of the way through;
- stops one worker with SIGSTOP for longer than the lease, then SIGCONT, 40% of the way:
  its jobs are rescued meanwhile, and it must not finish (or save) what it no longer owns;
- cuts the network between worker 0 (which reaches PostgreSQL through a TCP proxy) and the
  database once for longer than the lease, 60% of the way through, then restores it;
- takes the exproot away once (its path becomes a symlink to a plain file, so every mkdir and
  rsync into it fails) for a few seconds, half of the way through. Jobs booked meanwhile end
  ERR_START (their pull failed) and jobs whose final push failed end ERR_SYNC: that is the
  product's defined behaviour for an unreachable exproot, so the driver requeues exactly those
  (``Store.requeue``) once the exproot is back, and counts them.

At the end (every job DONE, or the time limit) it stops the workers with SIGTERM and checks
(:mod:`tests.soak.checks`): each job finished DONE exactly once (``events``), its
result is an uninterrupted run's, nothing is lost or duplicated, nothing is left RUNNING, no
job process outlived its worker, every job's history is consistent and no live worker's job
was declared lost; it prints the hot tables' dead tuples and the booking query's plan (an
index scan on the ready-jobs partial index, no Sort). Exit 0 when every check passed, 1
otherwise, 2 when no private PostgreSQL can be started here.

Jobs are enqueued with a high ``max_attempts``: losing a job to a SIGKILL is the point here,
and the loss limit (a different feature) must not turn a thrice-unlucky job into ERR_RUN.
"""
from __future__ import annotations

import argparse
import importlib.util
import dataclasses
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from tests.soak import checks
from tests.soak.checks import ChaosReport, summary
from tests.soak.harness import (LOOP, TICK, Fleet, WorkerProc, WorkerSettings, add_run_options,
                                cli_prelude)
from tests.support.pgcluster import server_unavailable
from tests.support.proxy import Proxy
from dbdict_worker.constants import Status
from dbdict_worker.store import Store


#: The example whose weights live in a checkpoint file (if this checkout has it yet).
CHECKPOINT = "dbdict_worker.examples.checkpoint"


@dataclasses.dataclass
class ChaosConfig:
    """What to run and how hard to shake it."""

    jobs: int = 20000
    workers: int = 4
    slots: int = 2
    seed: int | None = None
    duration_limit: float | None = None  # None: 180 s + 0.5 s per job
    kill_interval: float = 4.0  # mean seconds between kills (uniform in [0.5x, 1.5x])
    pg_down: float = 5.0  # longer than the lease: owners must not lose their jobs
    exproot_down: float = 8.0
    pg_restart_at: float = 0.25  # fraction of jobs DONE
    exproot_outage_at: float = 0.5
    stall_at: float = 0.4  # SIGSTOP of a worker, for stall_s
    stall_s: float = 8.0  # longer than the lease
    netcut_at: float = 0.6  # worker 0's network cut, for netcut_s
    netcut_s: float = 10.0  # longer than the lease
    checkpoint_share: float = 0.25  # of the jobs, when the checkpoint example exists
    lease: float = 3.0
    grace: float = 5.0
    save_interval: float = 0.25
    durable: bool = True
    keep: bool = False
    root: str | None = None  # parent of the run directory (default: the temp dir)

    def limit(self) -> float:
        return self.duration_limit if self.duration_limit is not None \
            else 180.0 + 0.5 * self.jobs


class Chaos:
    """One soak run; :meth:`run` always cleans up, whatever happens."""

    def __init__(self, cfg: ChaosConfig, say: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.say = say
        seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 30)
        self.rng = random.Random(seed)
        self.report = ChaosReport(cfg.jobs, cfg.workers, cfg.slots, seed, cfg.durable)
        self.fleet = Fleet(cfg.workers, WorkerSettings(cfg.slots, cfg.lease, cfg.grace,
                                                       save_interval=cfg.save_interval),
                           prefix="dbdict-chaos-", root=cfg.root, fail=self._fail)
        self.dir = self.fleet.dir
        self.exproot = self.fleet.exproot  # a symlink the outage repoints
        self.workers = self.fleet.workers
        self.killed_pids = self.fleet.killed_pids
        self.created: dict[int, int] = {}
        self.outage_until: float | None = None
        self._outage_start = 0.0
        self.outage_over = False
        self.requeued: set[int] = set()
        self.proxy: Proxy | None = None
        # Workers whose leases the driver let run out (SIGSTOP, network cut): their jobs'
        # losses are due, as a SIGKILLed worker's are.
        self.excused_pids: set[int] = set()
        self.stall: tuple[WorkerProc, float] | None = None  # (worker, until)
        self.stall_over = False
        self.netcut_until: float | None = None
        self.netcut_over = False

    # --- the whole run -----------------------------------------------------------------------

    def run(self) -> ChaosReport:
        """Set up, shake, stop, check; the report (its ``failures`` say what went wrong)."""
        t0 = time.monotonic()
        try:
            self._setup()
            started = time.monotonic()
            self._drive(deadline=t0 + self.cfg.limit())
            self.report.duration_s = round(time.monotonic() - started, 1)
            self.report.jobs_per_s = round(self.cfg.jobs / max(self.report.duration_s, 1e-9), 1)
            self._stop_workers()
            self._check_orphans()
            self._verify()
        finally:
            self._cleanup()
        return self.report

    def _fail(self, text: str) -> None:
        self.report.failures.append(text)
        self.say(f"chaos: FAIL: {text}")

    def _setup(self) -> None:
        cfg = self.cfg
        url = self.fleet.start_server(durable=cfg.durable)
        self.server, self.engine = self.fleet.server, self.fleet.engine
        (self.dir / "exproot.off").write_text("the exproot is away (chaos outage)\n")
        n_ckpt = int(cfg.jobs * cfg.checkpoint_share) \
            if importlib.util.find_spec(CHECKPOINT) is not None else 0
        params = [{"total": self.rng.randint(5, 30),
                   "sleep": round(self.rng.uniform(0.01, 0.03), 3), "i": i}
                  for i in range(cfg.jobs)]
        for p in params[:n_ckpt]:
            p["ckpt_every"] = self.rng.randint(1, 4)
        with Store.open(url, retry_seconds=60) as store:
            ids = store.enqueue(CHECKPOINT, params[:n_ckpt], table="chaos",
                                max_attempts=1000).created if n_ckpt else []
            ids += store.enqueue(LOOP, params[n_ckpt:], table="chaos",
                                 max_attempts=1000).created
        self.created = dict(zip(ids, range(cfg.jobs)))
        self.report.checkpoint_jobs = n_ckpt
        assert self.fleet.worker_url is not None
        self.proxy = Proxy(self.fleet.worker_url)
        self.fleet.urls[0] = self.proxy.url  # worker 0, restarts included
        self.report.plan_start = self._plan()
        self.say(f"chaos: {cfg.jobs} jobs enqueued in {self.dir}; PostgreSQL on port "
                 f"{self.server.port} ({'durable' if cfg.durable else 'fast'}), seed "
                 f"{self.report.seed}")
        for k in range(cfg.workers):
            self._start_worker(k)

    def _start_worker(self, k: int) -> None:
        self.fleet.start_worker(k)

    # --- the storm ---------------------------------------------------------------------------

    def _counts(self) -> dict[Status, int] | None:
        assert self.engine is not None
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.text(
                    "SELECT status, count(*) FROM jobs GROUP BY status")).all()
        except sa.exc.OperationalError:
            return None  # the database is restarting: look again next tick
        return {Status(s): n for s, n in rows}

    def _drive(self, deadline: float) -> None:
        cfg, n = self.cfg, self.cfg.jobs
        next_kill = time.monotonic() + self._gap()
        next_note = time.monotonic() + 10
        while True:
            now = time.monotonic()
            counts = self._counts()
            if counts is not None:
                done = counts.get(Status.DONE, 0)
                if not self.report.pg_restarts and done >= cfg.pg_restart_at * n:
                    self._restart_pg()
                    continue
                if self.outage_until is None and done >= cfg.exproot_outage_at * n:
                    self.report.plan_mid = self._plan()
                    self._exproot_down(now)
                active = counts.get(Status.START, 0) + counts.get(Status.RUNNING, 0)
                if not self.stall_over and self.stall is None and done >= cfg.stall_at * n:
                    self._stall(now)
                if self.netcut_until is None and done >= cfg.netcut_at * n:
                    self._netcut(now)
                if self.outage_over and self.report.pg_restarts and self.stall_over \
                        and self.netcut_over:
                    if active == 0 and not self._requeue_sync_failures():
                        break  # nothing runs, nothing to requeue: the storm is over
                    if active:
                        self._requeue_sync_failures()
                if now >= next_note:
                    next_note = now + 10
                    self.say(f"chaos: {done}/{n} DONE, {active} queued or running, "
                             f"{self.report.sigkills} SIGKILL, {self.report.sigterms} SIGTERM")
            self._heal(now)
            if self.outage_until is not None and not self.outage_over \
                    and now >= self.outage_until:
                self._exproot_up()
            self.report.worker_restarts += self.fleet.service(now)
            if now >= next_kill and (counts is None or counts.get(Status.DONE, 0) < n):
                self._kill_random()
                next_kill = now + self._gap()
            if now > deadline:
                self._fail(f"time limit of {cfg.limit():.0f}s reached: {counts}")
                return
            time.sleep(TICK)

    def _plan(self) -> str:
        assert self.engine is not None
        try:
            return checks.booking_plan(self.engine)
        except sa.exc.OperationalError as e:
            return f"(no plan: {e})"

    def _gap(self) -> float:
        return self.rng.uniform(0.5, 1.5) * self.cfg.kill_interval

    def _kill_random(self) -> None:
        spared = {0} if self.netcut_until is not None and not self.netcut_over else set()
        if self.stall is not None:
            spared |= {k for k, w in enumerate(self.workers) if w is self.stall[0]}
        candidates = [k for k, w in enumerate(self.workers) if w is not None and w.alive()
                      and w.term_at is None and k not in spared]
        if not candidates:
            return
        k = self.rng.choice(candidates)
        w = self.workers[k]
        assert w is not None
        if self.rng.random() < 0.5:
            self.fleet.sigkill(w)
            self.report.sigkills += 1
            self._start_worker(k)
            self.report.worker_restarts += 1
        else:
            w.proc.send_signal(signal.SIGTERM)
            w.term_at = time.monotonic()
            self.report.sigterms += 1

    def _stall(self, now: float) -> None:
        """SIGSTOP a live worker (not its job processes) for longer than the lease."""
        live = [w for w in self.workers if w is not None and w.alive() and w.term_at is None]
        if not live:
            return
        w = self.rng.choice(live)
        self.say(f"chaos: SIGSTOP worker {w.proc.pid} for {self.cfg.stall_s:g}s")
        os.kill(w.proc.pid, signal.SIGSTOP)
        self.excused_pids.add(w.proc.pid)
        self.stall = (w, now + self.cfg.stall_s)

    def _netcut(self, now: float) -> None:
        assert self.proxy is not None
        self.say(f"chaos: worker 0 cut off from PostgreSQL for {self.cfg.netcut_s:g}s")
        self.proxy.cut()
        self.netcut_until = now + self.cfg.netcut_s
        self._netcut_start = now

    def _heal(self, now: float) -> None:
        """SIGCONT the stopped worker, restore worker 0's network, when their time is up
        (``now`` = inf: at once)."""
        if self.stall is not None and now >= self.stall[1]:
            w, _ = self.stall
            os.kill(w.proc.pid, signal.SIGCONT)
            self.stall, self.stall_over = None, True
            self.report.stalls += 1
            self.say(f"chaos: SIGCONT worker {w.proc.pid}")
        if self.netcut_until is not None and not self.netcut_over:
            w0 = self.workers[0]
            if w0 is not None:
                self.excused_pids.add(w0.proc.pid)
            if now >= self.netcut_until:
                assert self.proxy is not None
                self.proxy.restore()
                self.netcut_over = True
                self.report.netcuts += 1
                self.report.netcut_s = round(min(now, time.monotonic()) - self._netcut_start, 1)
                self.say("chaos: worker 0 reconnected")

    def _restart_pg(self) -> None:
        assert self.server is not None
        self.say(f"chaos: restarting PostgreSQL (down {self.cfg.pg_down:g}s)")
        t = time.monotonic()
        self.server.restart(down_seconds=self.cfg.pg_down)
        self.report.pg_restarts += 1
        self.report.pg_down_s = round(time.monotonic() - t, 1)

    def _point_exproot(self, target: Path) -> None:
        # A new symlink renamed over the old one: the switch is atomic for the workers.
        tmp = self.dir / "exproot.new"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, self.exproot)

    def _exproot_down(self, now: float) -> None:
        self.say(f"chaos: exproot away for {self.cfg.exproot_down:g}s")
        self._point_exproot(self.dir / "exproot.off")
        self.outage_until = now + self.cfg.exproot_down
        self._outage_start = now

    def _exproot_up(self) -> None:
        self._point_exproot(self.dir / "exproot.d")
        self.outage_over = True
        self.report.exproot_outages += 1
        self.report.exproot_down_s = round(time.monotonic() - self._outage_start, 1)
        self.say("chaos: exproot back")

    def _requeue_sync_failures(self) -> int:
        """Requeue the jobs the exproot outage failed (ERR_SYNC; ERR_START whose error names
        the exproot); other failures stay, for the checks to report."""
        assert self.server is not None
        try:
            with Store.open(self.server.url(), retry_seconds=10) as store:
                failed = store.jobs(statuses=[Status.ERR_SYNC, Status.ERR_START])
                ids = {j.id: j.status for j in failed if j.status == Status.ERR_SYNC
                       or str(self.exproot) in (j.error or "")}
                if ids:
                    store.requeue(ids=sorted(ids))
        except Exception as e:  # noqa: BLE001 - the database may be away; next tick
            self.say(f"chaos: requeue deferred: {type(e).__name__}: {e}")
            return 1
        for job_id, status in ids.items():
            if job_id not in self.requeued:
                self.requeued.add(job_id)
                if status == Status.ERR_SYNC:
                    self.report.err_sync_requeued += 1
                else:
                    self.report.err_start_requeued += 1
        return len(ids)

    # --- the end -----------------------------------------------------------------------------

    def _stop_workers(self) -> None:
        # Ended early (the time limit): a stopped worker must run to hear SIGTERM.
        self._heal(float("inf"))
        self.fleet.stop_workers()
        self.report.unexpected_worker_exits = self.fleet.unexpected_exits
        self.report.sigterm_before_ready = self.fleet.sigterm_before_ready

    def _check_orphans(self) -> None:
        self.report.orphans = self.fleet.orphans()

    def _verify(self) -> None:
        assert self.server is not None and self.engine is not None
        verdict = self.report.verdict
        with Store.open(self.server.url(), retry_seconds=60) as store:
            checks.verify_jobs(store.jobs_with_state(), self.created, verdict)
            attempts = {j.id: j.attempts for j in store.jobs()}
        with self.engine.connect() as conn:
            killed = self.fleet.killed_worker_ids(conn, also=self.excused_pids)
            checks.verify_events(conn, self.created, killed, verdict, attempts)
            self.report.dead_tuples = checks.dead_tuples(conn)
        self.report.plan_end = self._plan()
        # With no job ready the planner may pick a bitmap scan and sort its zero rows: not a
        # cost, so only noted; the plans that matter are those with jobs waiting.
        self.report.plan_end_note = checks.plan_problem(self.report.plan_end) or "ok"
        for when, plan in (("start", self.report.plan_start), ("middle", self.report.plan_mid)):
            why = checks.plan_problem(plan)
            if why:
                self._fail(f"{why} (at the {when} of the run):\n{plan}")
        if self.report.pg_restarts != 1:
            self._fail("PostgreSQL was not restarted")
        if self.report.exproot_outages != 1:
            self._fail("the exproot outage did not happen")
        if self.report.stalls != 1 or self.report.netcuts != 1:
            self._fail("the SIGSTOP or the network cut did not happen")

    def _cleanup(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.report.run_dir = self.fleet.cleanup(self.cfg.keep)


def run_chaos(cfg: ChaosConfig, say: Callable[[str], None] | None = None) -> ChaosReport:
    """Run one soak (see the module docstring); ``say`` gets progress lines (default: stderr).
    Raises RuntimeError if no private PostgreSQL can be started here."""
    why = server_unavailable()
    if why:
        raise RuntimeError(f"cannot start a private PostgreSQL: {why}")
    return Chaos(cfg, say or (lambda text: print(text, file=sys.stderr, flush=True))).run()


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.soak.chaos``; exit 0 when every check passed, 1 if one failed,
    2 if no private PostgreSQL can be started, 130 when interrupted.
    ``python -m tests.soak.chaos fleet [options]`` runs the fleet simulation instead
    (:mod:`tests.soak.fleet`: many light simulated workers on one PostgreSQL)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["fleet"]:
        from tests.soak import fleet

        return fleet.main(args[1:], prog="python -m tests.soak.chaos fleet")
    p = argparse.ArgumentParser(
        prog="python -m tests.soak.chaos",
        description="Chaos soak: N loop jobs through W real workers on a private PostgreSQL, "
                    "while workers are killed and restarted, PostgreSQL restarts once and the "
                    "exproot goes away once; then every job must be DONE exactly once with "
                    "the right result. Exit 0 when every check passed, 1 otherwise.")
    p.add_argument("--jobs", type=int, default=20000, help="jobs to run (default 20000)")
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--slots", type=int, default=2, help="slots per worker (default 2)")
    p.add_argument("--duration-limit", type=float, metavar="S",
                   help="give up after S seconds (default: 180 + 0.5 per job)")
    p.add_argument("--seed", type=int, help="seed of the kills and job sizes (default: random)")
    p.add_argument("--kill-interval", type=float, default=4.0, metavar="S",
                   help="mean seconds between worker kills (default 4)")
    add_run_options(p)
    a = p.parse_args(argv)
    if a.jobs < 1 or a.workers < 1 or a.slots < 1:
        p.error("--jobs, --workers and --slots must be at least 1")
    refused = cli_prelude(prog="chaos")
    if refused is not None:
        return refused
    cfg = ChaosConfig(jobs=a.jobs, workers=a.workers, slots=a.slots, seed=a.seed,
                      duration_limit=a.duration_limit, kill_interval=a.kill_interval,
                      durable=not a.fast, keep=a.keep, root=a.root)
    try:
        report = run_chaos(cfg)
    except KeyboardInterrupt:
        print("chaos: interrupted; workers and server stopped, files removed", file=sys.stderr)
        return 130
    print(json.dumps(report.as_dict(), indent=2) if a.json else summary(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
