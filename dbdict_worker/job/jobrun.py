"""One job from start to end on this machine: pull, run the child, follow its saves, push.

:class:`JobRun` is what ``dbdict run`` uses, and what a worker slot can use::

    run = JobRun(spec, syncer=Syncer(exproot.job(db, table, job.id), workdir),
                 on_save=lambda state: saves.put(state), grace=60)
    outcome = run.run()            # blocking: in the slot's thread
    ...
    run.request_stop()             # from any thread, or a signal handler: SIGTERM now,
                                   # SIGKILL after ``grace``; a second call kills at once

Status mapping: a failed pull (or workdir/spawn failure) is ERR_START; a failed final push
turns DONE or START into ERR_SYNC (and is appended to an ERR_RUN's or a PRUNED's error: a
pruned job is never retried); in both cases the
local workdir is kept, its path is in the error, and ``RunResult.pushed`` is False (a worker
removes the local workdir only when it is True). ``on_save`` runs in the thread that called
``run()``: keep it short (queue the database write) and do not let it raise (if it does, the
job is killed and the exception propagates). The spec's ``timeout`` and ``stall_after`` are
watched here (:mod:`.limits`): past one, the job is stopped as by ``request_stop`` and ends
ERR_RUN with ``Outcome.limit`` set.

With a syncer, the workdir is pushed at save points while the experiment waits (the first
save point at once, then at most every ``push_interval`` seconds, the sync config's by
default: the child asks, :class:`SavePusher` pushes and answers), so the exproot only ever
holds a current.conf with the files saved with it, which is what a resumed run starts from.
``on_save`` (the database's copy, for progress) is given saves only once this run has pushed
one: a job whose database state has moved on always has a current.conf of its own in the
exproot to resume from. Without a syncer, every save is given to ``on_save``.

``request_prune()`` (a search's pruner): the child is told (its ``channel.switch()`` returns
'prune'); an experiment that has not returned ``prune_wait`` seconds later is stopped as by
``request_stop``. Either way the attempt ends PRUNED (unless it failed), pushed like DONE.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Any, Callable

from dbdict_worker import state as statemod
from dbdict_worker.constants import Status
from dbdict_worker.job.forkserver import ForkServer
from dbdict_worker.job.limits import Limits
from dbdict_worker.job.process import JobProcess, JobSpec, Outcome, StartError
from dbdict_worker.job.sync import SavePusher, Syncer, SyncError

log = logging.getLogger("dbdict_worker")

#: How often the loop looks at stop requests when nothing else wakes it (seconds).
POLL = 0.1
#: How long a pruned experiment has to return on its own before it is stopped (seconds).
PRUNE_WAIT = 5.0


@dataclasses.dataclass(frozen=True)
class RunResult:
    """An :class:`Outcome` plus what the sync did (``pushed`` is None without an exproot)."""

    outcome: Outcome
    pushed: bool | None = None


class JobRun:
    """Runs one job to its end; thread-safe ``request_stop``; see the module docstring."""

    def __init__(self, spec: JobSpec, *, syncer: Syncer | None = None,
                 on_save: Callable[[dict[str, Any]], None] | None = None,
                 on_start: Callable[[JobProcess], None] | None = None,
                 grace: float = 60.0, push_interval: float | None = None,
                 forkserver: ForkServer | None = None,
                 on_metrics: Callable[[list[tuple[int, str, float]]], None] | None = None
                 ) -> None:
        self.spec = spec
        #: Given the child's reports as they come (``dbdict run``); without it they wait for
        #: :meth:`take_metrics` (a worker takes them in batches).
        self.on_metrics = on_metrics
        self.forkserver = forkserver
        self.syncer = syncer
        self.on_save = on_save
        self.on_start = on_start
        self.grace = grace
        self.push_interval = push_interval
        self.process: JobProcess | None = None
        # Plain counters, so request_stop() is safe in a signal handler: the loop acts on them.
        self._stop_requests = 0
        self._stops_handled = 0
        self._kill_at: float | None = None
        self._kill_why = ""
        self._abandoned = False
        # States whose push succeeded, for on_save (appended by the pusher's thread).
        self._pushed: collections.deque[dict[str, Any]] = collections.deque()
        self._pushed_once = False
        # Time limits (job/limits.py); a push under way (asked > answered) is activity.
        self._limits: Limits | None = None
        self._push_asked = self._push_answered = 0
        self._prune_requested = False
        self._prune_sent = False
        self._prune_stop_at: float | None = None
        self.prune_wait = PRUNE_WAIT

    def request_prune(self) -> None:
        """A search's pruner ends this job early (see the module docstring). Any thread."""
        self._prune_requested = True

    @property
    def prune_requested(self) -> bool:
        return self._prune_requested

    def take_metrics(self) -> list[tuple[int, str, float]]:
        """The child's reports (step, key, value) since the last call ([] before it starts)."""
        proc = self.process
        return proc.take_metrics() if proc is not None else []

    def request_stop(self) -> None:
        """Ask the job to stop: SIGTERM now, SIGKILL ``grace`` seconds later; a second call
        kills at once. Safe from any thread and from a signal handler (it sets a counter)."""
        self._stop_requests += 1

    def abandon(self) -> None:
        """The job is no longer ours (cancelled, or requeued and booked by another worker):
        kill it at once and push nothing, so nothing is written over the new owner's copy.
        Safe from any thread."""
        self._abandoned = True
        self._stop_requests += 2

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    @property
    def stop_requested(self) -> bool:
        return self._stop_requests > 0

    def run(self) -> RunResult:
        """Pull, run, follow, push; never raises for the job's own failures."""
        start_state = statemod.user_keys(statemod.flatten(self.spec.state))
        workdir = str(self.spec.workdir)
        if self.syncer is not None:
            try:
                self.syncer.pull()
            except SyncError as e:
                return RunResult(Outcome(Status.ERR_START, start_state,
                                         error=f"{e}; local copy kept at {self.syncer.local}",
                                         workdir=workdir), pushed=False)
        if self._stop_requests or self._prune_requested:
            # Stopped (or pruned) before it started: nothing to run, nothing to push.
            status = Status.PRUNED if self._prune_requested else Status.START
            return RunResult(Outcome(status, start_state, error="stopped before start",
                                     stopped=True, workdir=workdir))
        spec = self.spec
        if self.syncer is not None:
            interval = self.push_interval if self.push_interval is not None \
                else self.syncer.config.push_interval
            spec = dataclasses.replace(spec, push_interval=interval)
        try:
            proc = JobProcess.start(spec, forkserver=self.forkserver)
        except StartError as e:
            return self._push(Outcome(Status.ERR_START, start_state, error=str(e),
                                      workdir=workdir))
        self.process = proc
        self._limits = Limits.for_job(spec.timeout, spec.stall_after, proc.pid, proc.workdir)
        if self.on_start is not None:
            self.on_start(proc)
        pusher = SavePusher(self.syncer, allowed=lambda: self._may_push(proc)) \
            if self.syncer else None
        try:
            outcome = self._follow(proc, pusher)
            if self._prune_requested and outcome.status in (Status.DONE, Status.START):
                # It returned, or was stopped because it did not: either way the pruner
                # ended it, for good (never requeued, never retried).
                outcome = dataclasses.replace(outcome, status=Status.PRUNED, error=None)
        except BaseException:
            # A failing on_save (or an interrupt) must not leave the job running unwatched.
            proc.kill()
            proc.wait()
            raise
        finally:
            if pusher is not None:
                pusher.close()
        return self._push(outcome)

    def _follow(self, proc: JobProcess, pusher: SavePusher | None) -> Outcome:
        while True:
            self._act_on_stops(proc)
            outcome = proc.outcome
            if self.on_metrics is not None:
                rows = proc.take_metrics()  # after the outcome: the last ones are in
                if rows:
                    self.on_metrics(rows)
            if outcome is not None:
                return self._limits.ended(outcome, proc.workdir) if self._limits else outcome
            timeout = POLL
            if self._prune_requested and not self._prune_sent:
                timeout = 0.0
            if self._kill_at is not None:
                timeout = max(0.0, min(timeout, self._kill_at - time.monotonic()))
            proc.wait_activity(timeout)
            saves = proc.take_saves()
            if self._limits is not None and not self._stop_requests and self._limits.hit(
                    bool(saves) or self._push_asked > self._push_answered):
                self.request_stop()  # the usual stop; the outcome becomes the limit's
            if pusher is not None:
                for state in proc.take_push_requests():
                    self._push_asked += 1
                    pusher.request(lambda ok, s=state: self._answer(proc, s, ok))
                pushed = []
                while self._pushed:
                    pushed.append(self._pushed.popleft())
                saves = pushed + (saves if self._pushed_once else [])
            for state in saves:
                if self._abandoned:
                    break
                if self.on_save is not None:
                    self.on_save(state)

    def _answer(self, proc: JobProcess, state: dict[str, Any], pushed: bool) -> None:
        # In the pusher's thread, once the push for this save point has ended: the state may
        # now reach the database (the exproot has a current.conf of this job), and the child
        # goes on.
        if pushed:
            self._pushed.append(state)
            self._pushed_once = True
        self._push_answered += 1
        proc.answer_push(pushed)

    def _act_on_prune(self, proc: JobProcess, now: float) -> None:
        if not self._prune_sent:
            self._prune_sent = True
            log.info("pruning job process %d (stopped if still running in %.3g s)", proc.pid,
                     self.prune_wait)
            proc.prune()
            self._prune_stop_at = now + self.prune_wait
        elif self._prune_stop_at is not None and now >= self._prune_stop_at:
            self._prune_stop_at = None
            if not self._stop_requests:
                self.request_stop()  # it does not ask its channel: the usual stop protocol

    def _act_on_stops(self, proc: JobProcess) -> None:
        now = time.monotonic()
        if self._prune_requested:
            self._act_on_prune(proc, now)
        while self._stops_handled < self._stop_requests:
            self._stops_handled += 1
            if self._stops_handled == 1 and not self._abandoned:
                log.info("stopping job process %d (SIGTERM; SIGKILL in %.3g s)", proc.pid,
                         self.grace)
                proc.terminate()
                self._kill_at = now + self.grace
                self._kill_why = "did not stop within the grace period"
            else:
                self._kill_at = now
                self._kill_why = "no longer ours" if self._abandoned else "stop asked again"
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            if proc.kill():
                log.info("job process %d %s: killed", proc.pid, self._kill_why)

    def _may_push(self, proc: JobProcess) -> bool:
        """Whether this run may write the job's copy in the exproot now: the job is still
        ours and its lease holds (a worker frozen past its lease may have lost the job to a
        worker that is pulling that copy; a push then could mix two save points)."""
        return not self._abandoned and proc.lease_held()

    def _push(self, outcome: Outcome) -> RunResult:
        if self.syncer is None:
            return RunResult(outcome)
        # The final push waits for the lease to be renewed, or for the job to be taken away.
        while self.process is not None and not self._abandoned \
                and not self.process.lease_held():
            if self._stop_requests:
                # Leaving with a lapsed lease: the job may be another worker's by now. Write
                # nothing; it comes back by lease from its last pushed save point.
                log.warning("job process %d: its lease lapsed and the worker is leaving: "
                            "nothing is pushed or written", self.process.pid)
                self._abandoned = True
                break
            time.sleep(POLL)
        if self._abandoned:
            return RunResult(outcome, pushed=False)
        try:
            self.syncer.push()
        except SyncError as e:
            note = f"{e}; local copy kept at {self.syncer.local}"
            if outcome.status in (Status.DONE, Status.START):
                outcome = dataclasses.replace(outcome, status=Status.ERR_SYNC, error=note)
            else:
                outcome = dataclasses.replace(
                    outcome, error=f"{outcome.error}; {note}" if outcome.error else note)
            return RunResult(outcome, pushed=False)
        return RunResult(outcome, pushed=True)
