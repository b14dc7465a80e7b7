"""The worker daemon (``dbdict-worker start``): one supervisor process, N job slots.

The supervisor's loop runs in one thread and makes every database call. It books jobs, starts
one job run per booked job in a slot thread (the experiment itself runs in a child process),
hands the saves and final statuses the slots report to :mod:`~dbdict_worker.worker.writes`,
heartbeats, and rescues jobs of dead workers (:mod:`~dbdict_worker.worker.rescue`). Signal
handlers only count; the loop acts on the counts.

What it needs from outside is named in :mod:`~dbdict_worker.worker.ports`: a test can build a
real supervisor in-process with a store of its own making and a job run factory of its own,
and wait on the milestones (:mod:`~dbdict_worker.worker.events`) it reports to an observer.
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
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

from dbdict_worker.constants import EXIT_ENVIRONMENT, Status
from dbdict_worker.db import workers as workerq
from dbdict_worker.job import forkserver, scratch
from dbdict_worker.job.jobrun import JobRun, RunResult
from dbdict_worker.job.process import JobSpec, Outcome
from dbdict_worker.errors import DbdictError, LostOwnership, NotFound
from dbdict_worker.job.sync import ExpRoot, Syncer
from dbdict_worker.job.workdir import EnvironmentFault
from dbdict_worker import provenance
from dbdict_worker.names import safe_segment
from dbdict_worker.records import reserved
from dbdict_worker.signals import handling, same_handler
from dbdict_worker.store import Booking
from dbdict_worker.worker import restarts, retries, sdnotify
from dbdict_worker.worker.events import (Booked, ControlSent, Draining, Ended, Exited,
                                         Finished, JobsReady, Message, Milestone, Observer,
                                         OutageEnded, OutageStarted, Saved, Stopping,
                                         TakenAway)
from dbdict_worker.worker.lease import Leases
from dbdict_worker.worker.environment import Health, check as check_environment
from dbdict_worker.worker.ports import JobRunFactory, QueueStore, RunsJob
from dbdict_worker.worker.logship import LogShip
from dbdict_worker.worker.metricship import MetricShip, interval_from_env
from dbdict_worker.worker.rescue import Rescuer
from dbdict_worker.worker.walltime import Walltime
from dbdict_worker.worker.writes import (CALL_RETRY_SECONDS, FINAL_WAIT_SECONDS, MAX_BACKOFF,
                                         Final, Outage, Writes)

log = logging.getLogger("dbdict_worker.worker")

#: The shortest wait before booking again for a job that is about due (seconds).
MIN_DUE_WAIT = 0.05
#: Poll intervals (seconds) above which an empty booking also asks when the first delayed
#: job is due, to book it then rather than at the next poll.
NEXT_DUE_AFTER = 5.0


@dataclasses.dataclass
class WorkerConfig:
    """The options of ``dbdict-worker start``."""

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
    #: Failures of this machine's own environment in a row (the jobs go back uncounted)
    #: after which the worker books no more and exits EXIT_ENVIRONMENT.
    env_failure_limit: int = 5
    #: The first pause without booking after such a failure; each next one doubles.
    env_pause: float = 2.0
    #: Bytes of each attempt's stdout and stderr kept in the database (0: none): logship.py.
    log_tail: int = 65536
    #: Seconds it may run, and the least left to book: see worker/walltime.py (None: default).
    walltime: float | None = None
    min_remaining: float | None = None

    def __post_init__(self) -> None:
        if self.gpus:
            self.slots = len(self.gpus)


@dataclasses.dataclass
class Slot:
    """A booked job running in a slot thread."""

    booking: Booking
    run: RunsJob
    local: Path
    remote: ExpRoot | None
    gpu: str | None
    started: float
    thread: threading.Thread | None = None
    #: Until when (time.monotonic()) the job may run: see :mod:`.lease`.
    renewed_until: float = 0.0
    paused: bool = False


class Supervisor:
    """Runs until drained, stopped, empty (``until_empty``) or done (``max_jobs``).

    ``job_run`` makes each job's run (the real :class:`JobRun` by default); ``observer``
    receives the milestones; ``clock`` is the monotonic clock of every timer; ``call_retry``
    is how long one database call retries before the worker goes on without the database;
    ``final_wait`` how long a stopping worker waits for it to take the last results.
    """

    def __init__(self, store: QueueStore, config: WorkerConfig, *,
                 job_run: JobRunFactory = JobRun, observer: Observer | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 call_retry: float = CALL_RETRY_SECONDS,
                 final_wait: float = FINAL_WAIT_SECONDS) -> None:
        self.cfg = config
        self.clock = clock
        self.job_run = job_run
        self.observer = observer
        self.final_wait = final_wait
        #: The first delay of a restart without progress (worker/restarts.py), in seconds.
        self.restart_base = restarts.delay_base_from_env()
        self.host = socket.gethostname()
        self.run_info = provenance.run_info_json(config.gpus)  # each booking records it
        self.worker_id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # In an outage, try again often enough to renew the leases in time once it is over.
        self.outage = Outage(self._milestone, clock=clock,
                             max_backoff=min(MAX_BACKOFF, config.lease / 3))
        self.leases = Leases(config.lease, config.heartbeat)
        self.store = store.with_retry(call_retry, watcher=self.outage)
        self.writes = Writes(self.store, self.outage, self._milestone)
        self.logs = LogShip(self.store, self.outage, config.log_tail, config.heartbeat, clock=clock)
        self.metrics = MetricShip(self.store, self.outage, interval_from_env(), clock=clock)
        self.rescuer = Rescuer(self.store, self.outage, self.worker_id, config.lease)
        self.messages: queue.Queue[Message] = queue.Queue()
        self.slots: dict[int, Slot] = {}
        self.booked = 0
        self.stop_requests = 0  # signal handlers only count; the loop acts
        self._stops_handled = 0
        self.drain_requested = False
        self._waiting_for_others = False  # --until-empty, the queue empty: logged once
        self.draining = False
        self.stopping = False
        self._wake = True
        self._next_beat = 0.0
        self._next_poll = 0.0
        self.listener = None
        self.forkserver = forkserver.ForkServer() if forkserver.enabled() else None
        self._free_gpus = list(config.gpus or [])
        self.health = Health(config.env_failure_limit, config.env_pause, clock)
        self.walltime = Walltime(config.walltime, min_remaining=config.min_remaining,
                                 grace=config.grace, clock=clock)
        self.exit_code = 0
        target = store.target
        db_name = target.url.database or "db"
        if target.is_sqlite:
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
            listening = not (config.poll_only or target.is_sqlite)
            self.poll_interval = 30.0 if listening else 1.0

    # ---------------------------------------------------------------------------------------
    # Running

    def run(self) -> int:
        """The main loop; returns the exit code (0: drained, stopped, empty or done)."""
        scratch.remove_dead()  # job scratch dirs of killed workers on this host ($TMPDIR)
        missing = self.store.register_worker(self.worker_id, self.host, os.getpid(),
                                             self.cfg.slots, self.cfg.tables)
        if missing:
            log.info("waiting for table(s) %s: not created yet; their jobs are booked as soon "
                     "as they are enqueued", ", ".join(missing))
        log.info("worker %s started: %d slot(s)%s, tables %s, exproot %s", self.worker_id,
                 self.cfg.slots, f" on GPUs {','.join(self.cfg.gpus)}" if self.cfg.gpus else "",
                 ",".join(self.cfg.tables) if self.cfg.tables else "all",
                 self.exproot or f"none (workdirs in {self.workdir_base})")
        self._start_listener()
        sdnotify.notify(f"READY=1\nSTATUS=worker {self.worker_id}")
        try:
            while True:
                self.walltime.tick(self.clock(), drain=self.request_drain, stop=self.request_stop)
                self._act_on_signals()
                now = self.clock()
                if now >= self._next_beat:
                    self._beat()
                    self._next_beat = now + self.cfg.heartbeat
                self.leases.pause_overdue(self.slots.items())
                self._take_messages(timeout=0)
                # Book before writing the results of finished jobs: a free slot starts its
                # next job while this thread writes the previous one's status.
                if self._may_book() and (self._wake or now >= self._next_poll):
                    self._wake = False
                    self._next_poll = now + self.poll_interval
                    self._book()
                self.metrics.flush()  # reports, one statement at most every interval
                self.writes.flush()
                if self._finished():
                    break
                self._take_messages(timeout=self._idle_timeout())
        finally:
            self._shutdown()
        return self.exit_code

    def _idle_timeout(self) -> float:
        now = self.clock()
        wait = min(self._next_beat, self._next_poll if self._may_book() else now + 1) - now
        if self.writes.pending:
            wait = min(wait, max(0.0, self.outage.retry_at - now))
        return max(0.0, min(wait, 0.5))  # signals are looked at at least twice a second

    def _finished(self) -> bool:
        if self.slots:
            return False
        leaving = self.stopping or self.draining
        if self.writes.finals:
            # Leaving while the database is away: _shutdown gives the writes a last chance;
            # what stays unwritten comes back by lease (its state is in the exproot).
            return leaving and self.outage.down_for() > self.final_wait
        if leaving:
            return True
        if self.cfg.max_jobs is not None and self.booked >= self.cfg.max_jobs:
            return True
        return False

    def _milestone(self, milestone: Milestone) -> None:
        if isinstance(milestone, OutageStarted):
            log.warning("database unreachable (%s); %d job(s) keep running, their results are "
                        "kept until it is back", milestone.reason, len(self.slots))
        elif isinstance(milestone, OutageEnded):
            log.warning("database is back after %.0fs", milestone.seconds)
            self._next_beat = 0.0  # learn at once which jobs are still ours
            self._wake = True
        if self.observer is not None:
            self.observer(milestone)

    # ---------------------------------------------------------------------------------------
    # Signals

    def request_stop(self) -> None:
        """Stop: book nothing more, stop the jobs (they get the grace); a second call kills
        them. Safe in a signal handler: it only counts."""
        self.stop_requests += 1

    def request_drain(self) -> None:
        """Drain: book nothing more, let the jobs finish. Safe in a signal handler."""
        self.drain_requested = True

    def signals(self) -> AbstractContextManager[None]:
        """Install the handlers (SIGTERM/SIGINT: stop, again: kill; SIGUSR1: drain) for the
        duration, and put the previous ones back after."""
        def on_stop(signum: int, frame: Any) -> None:
            self.request_stop()

        def on_drain(signum: int, frame: Any) -> None:
            self.request_drain()

        return handling({**same_handler((signal.SIGTERM, signal.SIGINT), on_stop),
                         signal.SIGUSR1: on_drain})

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
            self._milestone(Stopping(kill=self._stops_handled > 1))
        if self.drain_requested and not self.draining and not self.stopping:
            self.draining = True
            log.info("draining: finishing %d job(s), booking no more", len(self.slots))
            self._set_state(workerq.DRAINING)
            self._milestone(Draining())

    # ---------------------------------------------------------------------------------------
    # Booking and slots

    def _may_book(self) -> bool:
        if self.stopping or self.draining or self.outage.down:
            return False
        if self.health.paused:
            return False
        if len(self.slots) >= self.cfg.slots:
            return False
        return self.cfg.max_jobs is None or self.booked < self.cfg.max_jobs

    def _book(self) -> None:
        n = self.cfg.slots - len(self.slots)
        if self.cfg.max_jobs is not None:
            n = min(n, self.cfg.max_jobs - self.booked)
        sent = self.leases.now()
        bookings = self.outage.call(lambda: self.store.book(
            self.worker_id, self.host, tables=self.cfg.tables, n=n, missing_ok=True,
            run_info=self.run_info))
        if bookings is None:
            return
        for booking in bookings:
            self.booked += 1
            if self.health.reason is not None and (
                    self.health.paused or self.exit_code == EXIT_ENVIRONMENT):
                # The machine failed for a job of this same booking: the others go back too.
                self._unbook(booking, self.health.reason)
            else:
                self._start(booking, self.leases.until(sent))
        due: float | None = None
        # A job waiting out a restart delay becomes ready without a notice: look again when
        # the first one is due. Not worth a second statement per poll when the next poll is
        # near anyway (polling without LISTEN: a large fleet's idle polls are its main load),
        # unless --until-empty must know whether delayed jobs remain.
        ask_due = self.poll_interval > NEXT_DUE_AFTER or (
            self.cfg.until_empty and not bookings and not self.slots)
        if len(bookings) < n and ask_due:
            # A failed call (None) decides nothing.
            answer = self.outage.call(lambda: (self.store.next_due(tables=self.cfg.tables),))
            if answer is None:
                return
            (due,) = answer
            if due is not None:
                self._next_poll = min(self._next_poll, self.clock() + max(due, MIN_DUE_WAIT))
        if not bookings and self.cfg.until_empty and not self.slots:
            if due is not None:
                # Jobs waiting out a restart delay are part of the queue: wait for them.
                log.debug("queue empty but for delayed jobs: the first is due in %.1fs", due)
            elif self.writes.finals:
                # Look again once their results are written (this iteration's flush), not
                # at the next poll, which with LISTEN is 30 s away.
                self._wake = True
            elif self._running_elsewhere():
                # Their owners may have died: wait, and rescue them once their lease passes.
                # Nothing announces that they end: look again at the next heartbeat.
                self._next_poll = min(self._next_poll, self.clock() + self.cfg.heartbeat)
            else:
                log.info("queue empty: exiting (--until-empty)")
                self.draining = True

    def _running_elsewhere(self) -> bool:
        """Whether jobs of this worker's tables run under other workers (or it is unknown,
        the database being away)."""
        try:
            answer = self.outage.call(lambda: self.store.counts(tables=self.cfg.tables,
                                                                statuses=[Status.RUNNING]))
        except NotFound:  # a table not created yet (the worker waits for it) runs nothing
            return False
        if answer is None:
            return True
        running = sum(answer.values())
        if running and not self._waiting_for_others:
            log.info("queue empty but %d job(s) of its tables run under other workers: "
                     "waiting for them (--until-empty)", running)
        self._waiting_for_others = bool(running)
        return bool(running)

    def _start(self, booking: Booking, renewed_until: float) -> None:
        job = booking.job
        try:
            local = self.workdir_base / self.db_name / safe_segment(job.table) / str(job.id)
            # Without an exproot the job's directory for good is `local` itself, kept like an
            # exproot's: the job runs in a copy pushed back at its save points, so what a
            # later run resumes from is a state and the files saved with it, never a
            # checkpoint written after the last save.
            remote = self.exproot.job(self.db_name, job.table, job.id) if self.exproot \
                else ExpRoot(str(local))
            # The local copy is scratch, one per booking, so a copy kept after a failed push
            # (or left by a dead worker) is never reused or clobbered.
            local = local.with_name(f"{job.id}.{booking.token.attempt}")
            check_environment(self.workdir_base, self.exproot, local, remote)
        except EnvironmentFault as e:
            self._environment_failed(booking, str(e))
            return
        except DbdictError as e:  # this job's own data: it fails, the worker goes on
            self._fail_start(booking, str(e))
            return
        if self.health.succeeded():
            log.warning("this machine can start jobs again")
            self._set_state(self._state_name())
        gpu = self._free_gpus.pop(0) if self._free_gpus else None
        info = reserved(job, provenance=False)
        info["dbdict.workdir"] = str(remote) if remote is not None else str(local)
        spec = JobSpec(job.experiment, booking.state, workdir=local, reserved=info,
                       env={"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {},
                       renewed_until=renewed_until,
                       deadline=self.walltime.job_deadline(job.timeout),
                       timeout=job.timeout, stall_after=job.stall_after)
        syncer = Syncer(remote, local) if remote is not None else None
        run = self.job_run(spec, syncer=syncer, grace=self.cfg.grace, forkserver=self.forkserver,
                           on_save=lambda state, i=job.id: self.messages.put(Saved(i, state)))
        slot = Slot(booking, run, local, remote, gpu, self.clock(), renewed_until=renewed_until)
        slot.thread = threading.Thread(target=self._slot_main, args=(slot,),
                                       name=f"job-{job.id}", daemon=True)
        self.slots[job.id] = slot
        self.logs.track(job.id, booking.token.attempt, run)
        self.metrics.track(job.id, booking.token.attempt, run)
        log.info("job %d booked (attempt %d)%s: %s", job.id, booking.token.attempt,
                 f" on GPU {gpu}" if gpu is not None else "", job.experiment)
        slot.thread.start()
        self._milestone(Booked(job.id, booking.token.attempt))

    def _fail_start(self, booking: Booking, reason: str) -> None:
        """A job that cannot start because of its own data ends ERR_START with the reason."""
        log.warning("job %d cannot start: %s", booking.job.id, reason)
        outcome = Outcome(Status.ERR_START, dict(booking.state), error=reason)
        self.writes.add_final(Final(booking, RunResult(outcome), record_workdir=None,
                                    seconds=0.0))
        self._wake = True  # its slot is still free

    def _environment_failed(self, booking: Booking, reason: str) -> None:
        """The machine, not the job, failed: give the job back uncounted, pause booking with
        growing pauses, and give up after ``env_failure_limit`` failures in a row."""
        pause = self.health.failed(reason)
        self._unbook(booking, reason)
        n = self.health.failures
        if pause is None:
            log.error("this machine cannot start jobs (%s), %d times in a row: booking no "
                      "more, exiting %d once the running jobs end", reason, n, EXIT_ENVIRONMENT)
            self.exit_code = EXIT_ENVIRONMENT
            self.draining = True
        else:
            log.warning("this machine cannot start jobs (%s): job %d goes back to the queue "
                        "(attempt not counted); booking again in %gs (failure %d of %d)",
                        reason, booking.job.id, pause, n, self.health.limit)
            self._wake = True  # book once the pause is over, not at the next poll
        self._set_state(self._state_name())

    def _unbook(self, booking: Booking, reason: str) -> None:
        self.booked -= 1

        def unbook() -> bool:
            try:
                self.store.unbook(booking.token, f"{self.host}: {reason}")
            except LostOwnership:
                pass  # cancelled meanwhile: nothing to give back
            return True
        if self.outage.call(unbook) is None:
            log.warning("job %d: the database is away; the lease gives it back",
                        booking.job.id)

    def _slot_main(self, slot: Slot) -> None:
        try:
            result = slot.run.run()
        except Exception as e:  # a bug of ours must still end in a status, not a hang
            log.exception("job %d: the runner failed", slot.booking.job.id)
            result = RunResult(Outcome(Status.ERR_RUN, dict(slot.booking.state),
                                       error=f"worker error: {type(e).__name__}: {e}"),
                               pushed=False)
        self.messages.put(Finished(slot.booking.job.id, result))

    def _abandon(self, slot: Slot) -> None:
        slot.run.abandon()
        self._milestone(TakenAway(slot.booking.job.id))

    # ---------------------------------------------------------------------------------------
    # Messages from slots and the listener

    def _take_messages(self, timeout: float) -> None:
        try:
            message = self.messages.get(timeout=timeout) if timeout > 0 \
                else self.messages.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(message)
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return

    def _handle(self, message: Message) -> None:
        if isinstance(message, Saved):
            slot = self.slots.get(message.job_id)
            if slot is not None and not slot.run.abandoned:
                self.writes.save(slot.booking, slot.run, message.state)
        elif isinstance(message, Finished):
            self._done(message.job_id, message.result)
        elif isinstance(message, JobsReady):
            self._wake = True
        elif isinstance(message, ControlSent):
            self._next_beat = 0.0  # read the drain flag now

    def _done(self, job_id: int, result: RunResult) -> None:
        slot = self.slots.pop(job_id)
        self.logs.finish(job_id)  # its final output tail, before the status and the rmtree
        self.metrics.finish(job_id)  # its whole curve, before its status
        self.writes.forget_save(job_id)
        if slot.gpu is not None:
            self._free_gpus.append(slot.gpu)
        self._wake = True  # a slot is free
        seconds = self.clock() - slot.started
        # INCOMPLETE without new progress comes back later, and past its limit ends ERR_RUN;
        # a failure of a class the job retries comes back after its retry delay.
        outcome, restart = retries.after_run(slot.booking, result.outcome, self.restart_base)
        result = dataclasses.replace(result, outcome=outcome)
        self._milestone(Ended(job_id, result.outcome.status))
        if slot.run.abandoned:
            log.info("job %d: stopped, it is no longer ours (nothing written)", job_id)
            return
        if result.pushed:
            shutil.rmtree(slot.local, ignore_errors=True)
            record = str(slot.remote)
        else:
            record = str(slot.local)
        self.writes.add_final(Final(slot.booking, result, record, seconds, restart))

    def _on_listen(self, channel: str, payload: str) -> None:
        if channel == workerq.CONTROL_CHANNEL:
            if payload in ("", self.worker_id):
                self.messages.put(ControlSent())
        elif (not channel or not payload or self.cfg.tables is None
              or payload in self.cfg.tables):
            # No channel: the listener reconnected and may have missed notices of our tables.
            self.messages.put(JobsReady())

    def _start_listener(self) -> None:
        if self.cfg.poll_only or self.store.target.is_sqlite:
            return
        from dbdict_worker.db.listen import Listener

        self.listener = Listener(self.store.target.url,
                                 [workerq.JOBS_CHANNEL, workerq.CONTROL_CHANNEL],
                                 self._on_listen)
        self.listener.start()

    # ---------------------------------------------------------------------------------------
    # Heartbeats

    def _tokens(self) -> list:
        return [s.booking.token for s in self.slots.values() if not s.run.abandoned] + \
            self.writes.tokens()

    def _state_name(self) -> str:
        if self.stopping:
            return workerq.STOPPING
        if self.health.reason is not None:
            return f"{workerq.DEGRADED}: {self.health.reason}"
        return workerq.DRAINING if self.draining else workerq.RUNNING

    def _beat(self) -> None:
        sent = self.leases.now()
        answer = self.outage.call(lambda: self.store.worker_beat(
            self.worker_id, self._state_name(), self._tokens()))
        sdnotify.notify("WATCHDOG=1")
        if answer is None:
            return
        drain, owned, prune = answer
        if drain:
            self.drain_requested = True
        for job_id, slot in list(self.slots.items()):
            if job_id not in owned and not slot.run.abandoned:
                log.warning("job %d was taken away (cancelled or requeued): stopping it",
                            job_id)
                self._abandon(slot)
            elif job_id in owned:
                self.leases.renewed(job_id, slot, sent)
                if job_id in prune and not getattr(slot.run, "prune_requested", True):
                    log.info("job %d: pruned by its search; telling the experiment", job_id)
                    slot.run.request_prune()
        self.writes.drop_unowned(owned)
        if not self.stopping and self.rescuer.rescue():
            self._wake = True  # book what was just requeued
        self.logs.flush()  # the output tails of the jobs whose output grew, one statement

    def _set_state(self, state: str) -> None:
        self.outage.call(lambda: self.store.set_worker_state(self.worker_id, state))

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
        self.metrics.flush(force=True)
        unwritten = self.writes.last_chance(self.final_wait)
        if unwritten:
            log.warning("exiting with %d result(s) unwritten (database unreachable): those "
                        "jobs come back by lease, their last state is in the exproot",
                        unwritten)
        self.outage.retry_now()
        self._set_state(workerq.STOPPED)
        log.info("worker %s exits (%d job(s) booked)", self.worker_id, self.booked)
        self._milestone(Exited(self.booked, unwritten))
