"""What the chaos soak (:mod:`tests.soak.chaos`) checks once the storm is over, and its
report.

Each function reads the database (or ``/proc``) and returns plain values; the driver turns
them into its report. They hold whatever killed the workers: kills make jobs run more than
once, so "started once" is not asked, but "finished DONE once, with the right result" is.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from dbdict_worker.constants import Status
from dbdict_worker.db import queue
from dbdict_worker.db.connect import sent_statements
from dbdict_worker.db.models import Job

#: The tables every booking, save and heartbeat writes to.
HOT_TABLES = ("jobs", "state", "events", "workers")
#: The index scan a healthy booking plan reads the ready jobs with.
_READY_SCAN = re.compile(r"Index (Only )?Scan using jobs_ready\w* on jobs")


@dataclasses.dataclass
class Verdict:
    """The database's side of the checks; ``problems`` is empty when everything held."""

    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    done: int = 0
    lost: int = 0
    duplicated: int = 0
    extra_jobs: int = 0
    wrong_results: int = 0
    running_left: int = 0
    bookings: int = 0
    lost_events: int = 0
    spurious_losses: int = 0
    worker_requeues: int = 0
    user_requeues: int = 0
    unbookings: int = 0
    max_bookings_per_job: int = 0
    history_errors: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    def problem(self, text: str, limit: int = 20) -> None:
        """Note a failed check (at most ``limit`` lines per run, then a count)."""
        if len(self.problems) < limit:
            self.problems.append(text)
        elif len(self.problems) == limit:
            self.problems.append("... (more problems not shown)")


def expected_result(total: int) -> int:
    """What an uninterrupted run of the loop example ends with: 1 + 2 + ... + total."""
    return total * (total + 1) // 2


def verify_jobs(jobs_with_state: Iterable[tuple[Job, Mapping[str, Any]]],
                created: Mapping[int, int], verdict: Verdict) -> set[int]:
    """Statuses, results and the job set against ``created`` (id -> its ``i``); returns the
    ids of the jobs that are not DONE with the right result (for :func:`verify_events`)."""
    seen: dict[int, Job] = {}
    bad: set[int] = set()
    counts: collections.Counter[str] = collections.Counter()
    for job, state in jobs_with_state:
        counts[job.status.name] += 1
        if job.id not in created:
            verdict.extra_jobs += 1
            verdict.problem(f"job {job.id} was never enqueued by this run")
            continue
        seen[job.id] = job
        if job.status != Status.DONE:
            bad.add(job.id)
            if job.status == Status.RUNNING:
                verdict.running_left += 1
            verdict.problem(f"job {job.id} ends {job.status.name}: {job.error}")
            continue
        total = state.get("total")
        want = expected_result(total) if isinstance(total, int) else None
        # The loop example keeps its sum in the state (acc); the checkpoint one in its file.
        acc = state.get("acc") if "ckpt_every" not in state else want
        if (state.get("i") != created[job.id] or state.get("result") != want
                or state.get("step") != total or acc != want):
            bad.add(job.id)
            verdict.wrong_results += 1
            verdict.problem(f"job {job.id}: state {dict(state)} is not an uninterrupted "
                            f"run's (result {want}, step {total})")
    missing = set(created) - set(seen)
    for job_id in sorted(missing)[:5]:
        verdict.problem(f"job {job_id} is missing from the database")
    verdict.statuses = dict(sorted(counts.items()))
    verdict.done = counts.get(Status.DONE.name, 0)
    return bad | missing


def verify_events(conn: sa.Connection, created: Mapping[int, int], killed: set[str],
                  verdict: Verdict, attempts: Mapping[int, int]) -> None:
    """Walk every job's history (events by id, which follows each job's commits) through the
    states queued -> running -> done/failed, and count what the kills did.

    A booking must end in exactly one of: ``finished`` by its owner, ``requeued`` by its owner
    (a stop or INCOMPLETE), ``unbooked`` by its owner (it could not start it there: the
    attempt is taken back), or ``lost`` (its owner vanished; then the owner must be one of the
    ``killed`` worker ids: a loss of a live worker, e.g. after the PostgreSQL restart, is
    spurious). ``requeued`` without a worker is the driver's ``requeue`` of a failed job. The
    number of bookings must equal the job's ``attempts`` (the fencing counter).
    """
    rows = conn.execute(sa.text(
        "SELECT job_id, kind, worker_id, detail FROM events ORDER BY id")).all()
    history: dict[int, list[tuple[str, str | None, str]]] = collections.defaultdict(list)
    for job_id, kind, worker_id, detail in rows:
        history[job_id].append((kind, worker_id, detail or ""))
    for job_id in created:
        done, booked, problem = _walk(history.get(job_id, []), killed, verdict)
        verdict.bookings += booked
        verdict.max_bookings_per_job = max(verdict.max_bookings_per_job, booked)
        if problem is None and booked != attempts.get(job_id, -1):
            problem = f"{booked} booked events but attempts = {attempts.get(job_id)}"
        if problem is not None:
            verdict.history_errors += 1
            verdict.problem(f"job {job_id} history: {problem}: {history.get(job_id)}")
        if done > 1:
            verdict.duplicated += 1
            verdict.problem(f"job {job_id} finished DONE {done} times")
        elif done == 0:
            verdict.lost += 1
    verdict.duplicated += verdict.extra_jobs


def _walk(events: list[tuple[str, str | None, str]], killed: set[str],
          verdict: Verdict) -> tuple[int, int, str | None]:
    """(DONE finishes, bookings, the first inconsistency or None) of one job's events."""
    state, owner, done, booked = "queued", None, 0, 0
    for kind, worker, detail in events:
        if kind == "booked":
            if state != "queued":
                return done, booked, f"booked while {state}"
            state, owner = "running", worker
            booked += 1
        elif kind == "finished":
            if state != "running" or worker != owner:
                return done, booked, f"finished by {worker} while {state} (owner {owner})"
            state = "done" if detail.startswith("DONE") else "failed"
            done += state == "done"
        elif kind == "requeued" and worker is None:
            if state not in ("failed", "done"):
                return done, booked, f"requeued by user while {state}"
            verdict.user_requeues += 1
            state = "queued"
        elif kind == "requeued":
            if state != "running" or worker != owner:
                return done, booked, f"requeued by {worker} while {state} (owner {owner})"
            verdict.worker_requeues += 1
            state = "queued"
        elif kind == "unbooked":
            # Its worker could not start it (its own machine's fault): the booking is undone,
            # attempt and all.
            if state != "running" or worker != owner:
                return done, booked, f"unbooked by {worker} while {state} (owner {owner})"
            verdict.unbookings += 1
            booked -= 1
            state = "queued"
        elif kind == "lost":
            if state != "running":
                return done, booked, f"lost while {state}"
            verdict.lost_events += 1
            if owner not in killed:
                verdict.spurious_losses += 1
                verdict.problem(f"a job of live worker {owner} was declared lost: {detail}")
            state = "queued" if detail.endswith("now START") else "failed"
        else:
            return done, booked, f"unexpected event {kind!r}"
    if state != "done":
        return done, booked, f"ends {state}"
    return done, booked, None


def dead_tuples(conn: sa.Connection) -> dict[str, dict[str, Any]]:
    """n_live_tup, n_dead_tup and autovacuum count of the hot tables."""
    rows = conn.execute(sa.text(
        "SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count "
        "FROM pg_stat_user_tables WHERE relname = ANY(:names) ORDER BY relname"),
        {"names": list(HOT_TABLES)}).all()
    return {r[0]: {"live": r[1], "dead": r[2], "autovacuums": r[3], "autoanalyzes": r[4]}
            for r in rows}


def booking_plan(engine: sa.Engine, *, table_ids: tuple[int, ...] | None = None) -> str:
    """EXPLAIN of the exact statement the worker books with (``queue.book``, captured as
    it is sent, in a transaction that is rolled back)."""
    with engine.connect() as conn:
        with sent_statements(conn) as sent, conn.begin() as trans:
            queue.book(conn, worker_id="chaos-explain", host="chaos",
                       table_ids=table_ids, n=2)
            trans.rollback()  # nothing booked stays booked
        captured = [(sql, params) for sql, params in sent if "SKIP LOCKED" in sql]
        if not captured:
            return "(the booking statement was not seen)"
        statement, params = captured[0]
        rows = conn.exec_driver_sql("EXPLAIN " + statement, params).scalars().all()
    return "\n".join(rows)


def plan_problem(plan: str) -> str | None:
    """None if the booking plan reads the ready jobs by the partial index with no Sort."""
    if not _READY_SCAN.search(plan):
        return "the booking plan does not use an index scan on jobs_ready"
    if "Sort" in plan:
        return "the booking plan sorts"
    return None


#: Environment variables that tie a process to a soak's run directory.
RUN_MARKERS = ("DBDICT_WORKDIR=", "DBDICT_CHAOS_RUN=")


def processes_in(root: Path, variables: tuple[str, ...] = RUN_MARKERS) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose initial environment has one of
    ``variables`` pointing under ``root``.

    ``DBDICT_WORKDIR`` marks job processes started as new interpreters. A job forked by a
    worker's fork server shows the server's environment in ``/proc/PID/environ`` (a fork
    keeps the block it was exec'ed with), so the driver also gives its workers
    ``DBDICT_CHAOS_RUN=<run dir>``, which every descendant inherits: fork servers, forked
    jobs, rsync.
    """
    needles = [(v + str(root)).encode() for v in variables]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            if not any(item.startswith(n) for item in env for n in needles):
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found.append((int(entry.name), cmd.strip()))
    return found


@dataclasses.dataclass
class ChaosReport:
    """The figures of one soak, and the checks that failed (``ok`` when none)."""

    jobs: int
    workers: int
    slots: int
    seed: int
    durable: bool
    duration_s: float = 0.0
    jobs_per_s: float = 0.0
    sigkills: int = 0
    sigterms: int = 0
    worker_restarts: int = 0
    unexpected_worker_exits: int = 0
    sigterm_before_ready: int = 0  # SIGTERMs that hit a worker still starting up
    pg_restarts: int = 0
    pg_down_s: float = 0.0
    exproot_outages: int = 0
    exproot_down_s: float = 0.0
    err_sync_requeued: int = 0
    err_start_requeued: int = 0
    stalls: int = 0  # workers SIGSTOPped past their lease, then SIGCONTinued
    netcuts: int = 0
    netcut_s: float = 0.0
    checkpoint_jobs: int = 0  # of the jobs, those of the checkpoint example
    orphans: list[str] = dataclasses.field(default_factory=list)
    verdict: Verdict = dataclasses.field(default_factory=Verdict)
    dead_tuples: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    plan_start: str = ""  # the queue full, before the workers start
    plan_mid: str = ""  # halfway, under load (just before the exproot outage)
    plan_end: str = ""  # the queue empty: reported, not judged (plan_end_note)
    plan_end_note: str = ""
    failures: list[str] = dataclasses.field(default_factory=list)
    run_dir: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.verdict.problems

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        return out


def summary(report: ChaosReport) -> str:
    """The human-readable summary."""
    v = report.verdict
    lines = [
        f"jobs                 {report.jobs} ({report.workers} workers x {report.slots} slots, "
        f"seed {report.seed}, {'durable' if report.durable else 'fast'} PostgreSQL)",
        f"duration             {report.duration_s:.1f} s ({report.jobs_per_s:.1f} jobs/s)",
        f"kills                {report.sigkills} SIGKILL, {report.sigterms} SIGTERM; "
        f"{report.worker_restarts} worker restarts, "
        f"{report.unexpected_worker_exits} unexpected exits, "
        f"{report.sigterm_before_ready} SIGTERM(s) before a worker was ready",
        f"PostgreSQL restarts  {report.pg_restarts} (down {report.pg_down_s:.1f} s)",
        f"exproot outages      {report.exproot_outages} ({report.exproot_down_s:.1f} s); "
        f"requeued {report.err_sync_requeued} ERR_SYNC, {report.err_start_requeued} ERR_START",
        f"stalls, cuts         {report.stalls} SIGSTOP past the lease; {report.netcuts} "
        f"network cut of a worker ({report.netcut_s:.1f} s)",
        f"checkpoint jobs      {report.checkpoint_jobs} (state and checkpoint file must agree)",
        f"statuses             {v.statuses}",
        f"DONE                 {v.done}; lost {v.lost}; duplicated {v.duplicated}; wrong "
        f"results {v.wrong_results}; left RUNNING {v.running_left}; orphans {len(report.orphans)}",
        f"history              {v.bookings} bookings (max {v.max_bookings_per_job} for a job), "
        f"{v.lost_events} lost ({v.spurious_losses} spurious), {v.worker_requeues} requeued "
        f"by workers, {v.user_requeues} by the driver, {v.unbookings} unbooked; "
        f"{v.history_errors} inconsistent",
        "dead tuples          " + ", ".join(
            f"{t} {d['dead']}/{d['live']} live" for t, d in report.dead_tuples.items()),
        f"booking plan         start: {plan_problem(report.plan_start) or 'ok'}; "
        f"middle: {plan_problem(report.plan_mid) or 'ok'}; end (nothing ready): "
        f"{report.plan_end_note}",
        "booking plan under load (middle of the run):",
        *("    " + ln for ln in report.plan_mid.splitlines()),
    ]
    problems = report.failures + v.problems
    lines.append("RESULT               " + ("OK: all checks passed" if report.ok else
                                           f"FAILED ({len(problems)} problem(s))"))
    lines += ["  - " + p for p in problems]
    if report.run_dir:
        lines.append(f"kept                 {report.run_dir}")
    return "\n".join(lines)


__all__ = ["Verdict", "ChaosReport", "summary", "HOT_TABLES", "expected_result",
           "verify_jobs", "verify_events",
           "dead_tuples", "booking_plan", "plan_problem", "processes_in"]
