"""The worker daemon (``dbdict-worker start``): one supervisor process, N job slots.

The supervisor's main thread owns every database write. It books jobs, starts one
:class:`~dbdict_worker.job.jobrun.JobRun` per booked job in a slot thread (the experiment itself
runs in a child process), writes the saves and final statuses the slots report through a
queue, heartbeats, and rescues jobs of dead workers. Signal handlers only set flags; the loop
acts on them.

Database outages: a write that cannot be made is kept (the newest save per job, and each
final status) and retried with backoff while the children keep running; the outage is logged
once when it starts and once when it ends. A worker rescues stale jobs only after its own
connection has been healthy for a whole lease, so an outage that every worker saw never makes
running jobs look lost.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dbdict_worker.job import forkserver
from dbdict_worker.worker import sdnotify
from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.db import workers as workerq
from dbdict_worker.errors import DatabaseUnavailable, LostOwnership
from dbdict_worker.job.jobrun import JobRun, RunResult
from dbdict_worker.job.process import JobSpec, Outcome
from dbdict_worker.records import reserved
from dbdict_worker.store import Booking, Store
from dbdict_worker.job.sync import ExpRoot, Syncer, safe_segment

log = logging.getLogger("dbdict_worker.worker")

#: Seconds a stopping worker waits for an unreachable database to write its last results.
SHUTDOWN_DB_WAIT = 30.0


@dataclasses.dataclass
class WorkerConfig:
    """``dbdict-worker start``'s options (SPEC section 5)."""

    tables: list[str] | None = None
    exproot: str | None = None
    slots: int = 1
    gpus: list[str] | None = None
    max_jobs: int | None = None
    until_empty: bool = False
    grace: float = 60.0
    heartbeat: float = 10.0
    lease: float = 60.0
    workdir_base: str | None = None
    poll_only: bool = False
    #: Seconds between polls without LISTEN (SQLite, --poll-only), and the safety-net poll
    #: with it.
    poll_interval: float | None = None

    def __post_init__(self) -> None:
        if self.gpus:
            self.slots = len(self.gpus)


@dataclasses.dataclass
class Slot:
    """A booked job running in a slot thread."""

    booking: Booking
    run: JobRun
    local: Path
    remote: ExpRoot | None
    gpu: str | None
    started: float
    thread: threading.Thread | None = None


@dataclasses.dataclass
class Final:
    """A final status waiting to be written."""

    booking: Booking
    result: RunResult
    record_workdir: str
    seconds: float


class Supervisor:
    """Runs until drained, stopped, empty (``until_empty``) or done (``max_jobs``)."""

    def __init__(self, store: Store, config: WorkerConfig) -> None:
        self.store = store
        self.cfg = config
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.slots: dict[int, Slot] = {}
        self.finals: dict[int, Final] = {}
        self.saves: dict[int, dict[str, Any]] = {}
        self.booked = 0
        self.stop_requests = 0  # signal handlers only count; the loop acts
        self._stops_handled = 0
        self.drain_requested = False
        self.draining = False
        self.stopping = False
        self._wake = True
        self._db_down_since: float | None = None
        self._db_ok_since = time.monotonic()
        self._db_retry_at = 0.0
        self._db_backoff = 0.5
        self._next_beat = 0.0
        self._next_poll = 0.0
        self.listener = None
        self.forkserver = forkserver.ForkServer() if forkserver.enabled() else None
        self._free_gpus = list(config.gpus or [])
        db_name = store.target.url.database or "db"
        if store.target.is_sqlite:
            db_name = Path(db_name).stem or "sqlite"
        self.db_name = safe_segment(db_name)
        self.exproot = ExpRoot.parse(config.exproot) if config.exproot else None
        base = config.workdir_base or (
            os.path.join(tempfile.gettempdir(), f"dbdict-worker-{os.getuid()}")
            if self.exproot else os.path.join(os.getcwd(), "dbdict-jobs"))
        self.workdir_base = Path(base).resolve()
        if config.poll_interval is not None:
            self.poll_interval = config.poll_interval
        else:
            listening = not (config.poll_only or store.target.is_sqlite)
            self.poll_interval = 30.0 if listening else 1.0

    # ---------------------------------------------------------------------------------------
    # Running

    def run(self) -> int:
        """The main loop; returns the exit code (0: drained, stopped, empty or done)."""
        self.store.register_worker(self.worker_id, self.host, os.getpid(), self.cfg.slots,
                                   self.cfg.tables)
        log.info("worker %s started: %d slot(s)%s, tables %s, exproot %s", self.worker_id,
                 self.cfg.slots, f" on GPUs {','.join(self.cfg.gpus)}" if self.cfg.gpus else "",
                 ",".join(self.cfg.tables) if self.cfg.tables else "all",
                 self.exproot or f"none (workdirs in {self.workdir_base})")
        self._start_listener()
        sdnotify.notify(f"READY=1\nSTATUS=worker {self.worker_id}")
        try:
            while True:
                self._act_on_signals()
                now = time.monotonic()
                if now >= self._next_beat:
                    self._beat()
                    self._next_beat = now + self.cfg.heartbeat
                self._drain_events(timeout=0)
                # Book before writing the results of finished jobs: a free slot starts its
                # next job while this thread writes the previous one's status.
                if self._may_book() and (self._wake or now >= self._next_poll):
                    self._wake = False
                    self._next_poll = now + self.poll_interval
                    self._book()
                self._flush()
                if self._finished():
                    break
                self._drain_events(timeout=self._idle_timeout())
        finally:
            self._shutdown()
        return 0

    def _idle_timeout(self) -> float:
        now = time.monotonic()
        wait = min(self._next_beat, self._next_poll if self._may_book() else now + 1) - now
        if self.finals or self.saves:
            wait = min(wait, max(0.0, self._db_retry_at - now))
        return max(0.0, min(wait, 0.5))  # signals are looked at at least twice a second

    def _finished(self) -> bool:
        if self.slots:
            return False
        leaving = self.stopping or self.draining
        if self.finals:
            # Leaving while the database is away: _shutdown gives the writes a last chance;
            # what stays unwritten comes back by lease (its state is in the exproot).
            return leaving and self._db_down_since is not None and \
                time.monotonic() - self._db_down_since > SHUTDOWN_DB_WAIT
        if leaving:
            return True
        if self.cfg.max_jobs is not None and self.booked >= self.cfg.max_jobs:
            return True
        return False

    # ---------------------------------------------------------------------------------------
    # Signals

    @contextmanager
    def signals(self) -> Iterator[None]:
        """Install the handlers (SIGTERM/SIGINT: stop, again: kill; SIGUSR1: drain) for the
        duration, and put the previous ones back after."""
        def on_stop(signum: int, frame: Any) -> None:
            self.stop_requests += 1

        def on_drain(signum: int, frame: Any) -> None:
            self.drain_requested = True

        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT,
                                                     signal.SIGUSR1)}
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, on_drain)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _act_on_signals(self) -> None:
        while self._stops_handled < self.stop_requests:
            self._stops_handled += 1
            if self._stops_handled == 1:
                self.stopping = True
                log.info("stopping: %d job(s) get SIGTERM and %gs to save and return",
                         len(self.slots), self.cfg.grace)
                sdnotify.notify("STOPPING=1")
                self._set_state(workerq.STOPPING)
            else:
                log.info("stopping now: killing %d job(s)", len(self.slots))
            for slot in self.slots.values():
                slot.run.request_stop()
        if self.drain_requested and not self.draining and not self.stopping:
            self.draining = True
            log.info("draining: finishing %d job(s), booking no more", len(self.slots))
            self._set_state(workerq.DRAINING)

    # ---------------------------------------------------------------------------------------
    # Booking and slots

    def _may_book(self) -> bool:
        if self.stopping or self.draining or self._db_down_since is not None:
            return False
        if len(self.slots) >= self.cfg.slots:
            return False
        return self.cfg.max_jobs is None or self.booked < self.cfg.max_jobs

    def _book(self) -> None:
        n = self.cfg.slots - len(self.slots)
        if self.cfg.max_jobs is not None:
            n = min(n, self.cfg.max_jobs - self.booked)
        bookings = self._db(lambda: self.store.book(self.worker_id, self.host,
                                                    tables=self.cfg.tables, n=n))
        if bookings is None:
            return
        for booking in bookings:
            self.booked += 1
            self._start(booking)
        if not bookings and self.cfg.until_empty and not self.slots:
            if self.finals:
                # Look again once their results are written (this iteration's flush), not
                # at the next poll, which with LISTEN is 30 s away.
                self._wake = True
            else:
                log.info("queue empty: exiting (--until-empty)")
                self.draining = True

    def _start(self, booking: Booking) -> None:
        job = booking.job
        local = self.workdir_base / self.db_name / safe_segment(job.table) / str(job.id)
        remote = self.exproot.job(self.db_name, job.table, job.id) if self.exproot else None
        if remote is not None:
            # The exproot holds the job; the local copy is scratch, one per booking, so a copy
            # kept after a failed push (or left by a dead worker) is never reused or clobbered.
            local = local.with_name(f"{job.id}.{booking.token.attempt}")
        gpu = self._free_gpus.pop(0) if self._free_gpus else None
        info = reserved(job)
        info["dbdict.workdir"] = str(remote) if remote is not None else str(local)
        spec = JobSpec(job.experiment, booking.state, workdir=local, reserved=info,
                       env={"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})
        syncer = Syncer(remote, local) if remote is not None else None
        run = JobRun(spec, syncer=syncer, grace=self.cfg.grace, forkserver=self.forkserver,
                     on_save=lambda state, i=job.id: self.events.put(("save", i, state)))
        slot = Slot(booking, run, local, remote, gpu, time.monotonic())
        slot.thread = threading.Thread(target=self._slot_main, args=(slot,),
                                       name=f"job-{job.id}", daemon=True)
        self.slots[job.id] = slot
        log.info("job %d booked (attempt %d)%s: %s", job.id, booking.token.attempt,
                 f" on GPU {gpu}" if gpu is not None else "", job.experiment)
        slot.thread.start()

    def _slot_main(self, slot: Slot) -> None:
        try:
            result = slot.run.run()
        except Exception as e:  # a bug of ours must still end in a status, not a hang
            log.exception("job %d: the runner failed", slot.booking.job.id)
            result = RunResult(Outcome(Status.ERR_RUN, dict(slot.booking.state),
                                       error=f"worker error: {type(e).__name__}: {e}"),
                               pushed=False)
        self.events.put(("done", slot.booking.job.id, result))

    # ---------------------------------------------------------------------------------------
    # Events from slots and the listener

    def _drain_events(self, timeout: float) -> None:
        try:
            kind, key, value = self.events.get(timeout=timeout) if timeout > 0 \
                else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(kind, key, value)
            try:
                kind, key, value = self.events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, kind: str, key: Any, value: Any) -> None:
        if kind == "save":
            if key in self.slots and not self.slots[key].run.abandoned:
                self.saves[key] = value  # only the newest save of a job matters
        elif kind == "done":
            self._done(key, value)
        elif kind == "wake":
            self._wake = True
        elif kind == "control":
            self._next_beat = 0.0  # read the drain flag now

    def _done(self, job_id: int, result: RunResult) -> None:
        slot = self.slots.pop(job_id)
        self.saves.pop(job_id, None)
        if slot.gpu is not None:
            self._free_gpus.append(slot.gpu)
        self._wake = True  # a slot is free
        seconds = time.monotonic() - slot.started
        if slot.run.abandoned:
            log.info("job %d: stopped, it is no longer ours (nothing written)", job_id)
            return
        if result.pushed:
            shutil.rmtree(slot.local, ignore_errors=True)
            record = str(slot.remote)
        else:
            record = str(slot.local)
        self.finals[job_id] = Final(slot.booking, result, record, seconds)

    def _on_listen(self, channel: str, payload: str) -> None:
        if channel == workerq.CONTROL_CHANNEL:
            if payload in ("", self.worker_id):
                self.events.put(("control", None, None))
        elif not payload or self.cfg.tables is None or payload in self.cfg.tables:
            self.events.put(("wake", None, None))

    def _start_listener(self) -> None:
        if self.cfg.poll_only or self.store.target.is_sqlite:
            return
        from dbdict_worker.worker.wakeup import Listener

        self.listener = Listener(self.store.target.url,
                                 [workerq.JOBS_CHANNEL, workerq.CONTROL_CHANNEL],
                                 self._on_listen)
        self.listener.start()

    # ---------------------------------------------------------------------------------------
    # Database writes (all in this thread), surviving outages

    def _db(self, fn):  # noqa: ANN001, ANN201
        """Run a store call; on an outage remember it, log it once, return None."""
        if self._db_down_since is not None and time.monotonic() < self._db_retry_at:
            return None
        try:
            result = fn()
            recovered = self.store.retry.recovered_at
            if recovered is not None and recovered > self._db_ok_since:
                # A short outage that the store's own retries absorbed counts too.
                self._db_ok_since = recovered
        except DatabaseUnavailable as e:
            now = time.monotonic()
            if self._db_down_since is None:
                self._db_down_since = now
                self._db_backoff = 0.5
                log.warning("database unreachable (%s); %d job(s) keep running, their "
                            "results are kept until it is back", e, len(self.slots))
            self._db_retry_at = now + self._db_backoff
            self._db_backoff = min(self._db_backoff * 2, 10.0)
            return None
        if self._db_down_since is not None:
            log.warning("database is back after %.0fs", time.monotonic() - self._db_down_since)
            self._db_down_since = None
            self._db_ok_since = time.monotonic()
            self._next_beat = 0.0
            self._wake = True
        return result

    def _tokens(self) -> list:
        return [s.booking.token for s in self.slots.values() if not s.run.abandoned] + \
            [f.booking.token for f in self.finals.values()]

    def _state_name(self) -> str:
        if self.stopping:
            return workerq.STOPPING
        return workerq.DRAINING if self.draining else workerq.RUNNING

    def _beat(self) -> None:
        answer = self._db(lambda: self.store.worker_beat(self.worker_id, self._state_name(),
                                                         self._tokens()))
        sdnotify.notify("WATCHDOG=1")
        if answer is None:
            return
        drain, owned = answer
        if drain:
            self.drain_requested = True
        for job_id, slot in list(self.slots.items()):
            if job_id not in owned and not slot.run.abandoned:
                log.warning("job %d was taken away (cancelled or requeued): stopping it",
                            job_id)
                slot.run.abandon()
        for job_id in [j for j in self.finals if j not in owned]:
            log.warning("job %d was taken away before its result was written: dropped", job_id)
            del self.finals[job_id]
        self._rescue()

    def _rescue(self) -> None:
        if self._db_down_since is not None or self.stopping:
            return
        if time.monotonic() - self._db_ok_since < self.cfg.lease:
            return  # our own view of the database is too recent to judge others' heartbeats
        rescued = self._db(lambda: self.store.requeue_stale(self.cfg.lease,
                                                            by_worker=self.worker_id))
        for r in rescued or ():
            log.warning("job %d: owner %s stopped heartbeating; now %s", r.job_id,
                        r.worker_id, r.status.name)

    def _flush(self) -> None:
        for job_id in list(self.finals):
            final = self.finals[job_id]
            done = self._db(lambda f=final: self._write_final(f))
            if done is None:
                return
            del self.finals[job_id]
        for job_id in list(self.saves):
            slot = self.slots.get(job_id)
            state = self.saves[job_id]
            if slot is None or slot.run.abandoned:
                del self.saves[job_id]
                continue
            done = self._db(lambda s=slot, st=state: self._write_save(s, st))
            if done is None:
                return
            del self.saves[job_id]

    def _write_save(self, slot: Slot, state: dict[str, Any]) -> bool:
        try:
            self.store.save_state(slot.booking.token, state)
        except LostOwnership:
            log.warning("job %d was taken away (save refused): stopping it",
                        slot.booking.job.id)
            slot.run.abandon()
        return True

    def _write_final(self, final: Final) -> bool:
        job = final.booking.job
        outcome = final.result.outcome
        token = final.booking.token
        try:
            if outcome.status == Status.START:
                self.store.requeue_job(token, priority=RESTART_PRIORITY, state=outcome.state,
                                       reason=outcome.error or "incomplete",
                                       workdir=final.record_workdir)
                log.info("job %d requeued at priority %g after %.1fs (%s)", job.id,
                         RESTART_PRIORITY, final.seconds, outcome.error or "INCOMPLETE")
            else:
                self.store.finish(token, outcome.status, state=outcome.state,
                                  error=outcome.error, workdir=final.record_workdir)
                log.info("job %d %s after %.1fs%s", job.id, outcome.status.name,
                         final.seconds, f": {outcome.error}" if outcome.error else "")
        except LostOwnership:
            log.warning("job %d was taken away before its %s was written: dropped", job.id,
                        outcome.status.name)
        return True

    def _set_state(self, state: str) -> None:
        self._db(lambda: self.store.set_worker_state(self.worker_id, state))

    # ---------------------------------------------------------------------------------------
    # Leaving

    def _shutdown(self) -> None:
        # Normally nothing runs here; after an unexpected error, stop the children first.
        for slot in self.slots.values():
            slot.run.abandon()
        for slot in list(self.slots.values()):
            if slot.thread is not None:
                slot.thread.join(timeout=self.cfg.grace + 10)
        if self.listener is not None:
            self.listener.stop()
        if self.forkserver is not None:
            self.forkserver.close()
        deadline = time.monotonic() + SHUTDOWN_DB_WAIT
        while self.finals and time.monotonic() < deadline:
            self._db_retry_at = 0.0
            self._flush()
            if self.finals:
                time.sleep(1.0)  # the database is away: give it a little longer
        if self.finals:
            log.warning("exiting with %d result(s) unwritten (database unreachable): those "
                        "jobs come back by lease, their last state is in the exproot",
                        len(self.finals))
        self._db_retry_at = 0.0
        self._set_state(workerq.STOPPED)
        log.info("worker %s exits (%d job(s) booked)", self.worker_id, self.booked)
