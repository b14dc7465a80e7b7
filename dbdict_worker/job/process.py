"""The parent's side of one job's child process: :class:`JobProcess` (reused by the worker).

>>> proc = JobProcess.start(JobSpec("pkg.exp", {"lr": 0.1}, workdir="/scratch/job-17",
...                                 reserved={"dbdict.id": 17}))
>>> while (outcome := proc.wait(timeout=10)) is None:
...     for state in proc.take_saves():
...         store.save_state(token, state)     # the parent owns every database write
>>> outcome.status, outcome.state, outcome.error

The child (:mod:`dbdict_worker.job.runner`) runs in its own session (so :meth:`JobProcess.signal`
reaches its whole process group) with a cleaned environment: the database URL and PostgreSQL
passwords are removed, so an experiment never sees them. Two threads per job do the watching:
one reads the pipe continuously (so a large state never blocks the child), one waits for the
exit. Once the child has exited, whatever it left in its process group is killed, and the
outcome is fixed: the reported one, or, for a child that died without reporting, "killed by
signal N" / "exited with code N" (ERR_RUN, or START when we had asked it to stop).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dbdict_worker.job import messages
from dbdict_worker.job import scratch as scratchdirs
from dbdict_worker import state as statemod
from dbdict_worker.channel import (STOP_SIGNALS, report_interval_from_env,
                                   save_interval_from_env, set_deadline_env)
from dbdict_worker.constants import Status
from dbdict_worker.errors import DbdictError
from dbdict_worker.job.childenv import child_env, describe_returncode
from dbdict_worker.job.forkserver import ForkedChild, ForkServer
from dbdict_worker.job.popen import PopenChild, _group_stopped, _killpg
from dbdict_worker.job.workdir import (
    ERROR_KEY,
    EXPERIMENT_KEY,
    ID_KEY,
    STATUS_KEY,
    TEMPDIR_ENV,
    WORKDIR_ENV,
    Workdir,
    WorkdirError,
)

log = logging.getLogger("dbdict_worker")

#: Saves kept for take_saves() (the oldest are dropped beyond this).
MAX_SAVES = 1000
#: Metric reports kept for take_metrics() (the oldest are dropped beyond this): a caller that
#: never takes them must not grow us forever.
MAX_METRICS = 100_000
#: Signals after which a death by signal counts as "stopped" rather than failed.
_STOPPING = (*STOP_SIGNALS, signal.SIGKILL)


class StartError(DbdictError):
    """The job could not be started (workdir, scratch directory, spawn): ERR_START."""


@dataclass
class JobSpec:
    """What a job's child process needs.

    ``state`` is the flat user state (reserved keys in it are ignored); ``reserved`` the
    ``dbdict.*`` keys the experiment sees in ``state.dbdict`` (id, table, experiment, ...).
    With ``resume`` (the default) a workdir that already has a ``current.conf`` is resumed
    from it. ``env`` is added to the child's environment (``CUDA_VISIBLE_DEVICES``...);
    ``python_path`` is put first on the child's ``sys.path``. ``linger`` bounds how long a
    child that has reported its outcome may take to exit (stray threads) before it is killed.
    ``renewed_until`` (a worker's jobs) is the CLOCK_MONOTONIC time until which the job's
    lease is renewed: past it without a newer :meth:`JobProcess.renew`, the job's process
    group stops itself (:mod:`dbdict_worker.job.watchdog`); None: no lease.
    ``push_interval`` (a job with an exproot): the child's saves ask for a push at most this
    often and wait for :meth:`JobProcess.answer_push`; None: saves never wait.
    ``deadline`` (time.time() epoch; None: no limit): when the job will be asked to stop, for
    ``channel.time_left()`` and ``$DBDICT_DEADLINE``; it stops nothing by itself.
    """

    experiment: str
    state: Mapping[str, Any]
    workdir: str | os.PathLike
    reserved: Mapping[str, Any] = field(default_factory=dict)
    tempdir_base: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    save_interval: float | None = None
    redirect: bool = True
    resume: bool = True
    python: str = sys.executable
    python_path: Sequence[str] = ()
    linger: float = 30.0
    renewed_until: float | None = None
    push_interval: float | None = None
    deadline: float | None = None
    #: Time limits of this attempt, seconds (None: none), enforced by :class:`JobRun`
    #: (:mod:`dbdict_worker.job.limits`): wall time from the start, and no save, output or CPU.
    timeout: float | None = None
    stall_after: float | None = None
    #: Seconds between the child's flushes of channel.report (None: DBDICT_REPORT_INTERVAL,
    #: else 1 s).
    report_interval: float | None = None


@dataclass(frozen=True)
class Outcome:
    """How a job's run ended.

    ``status``: DONE (COMPLETE), START (INCOMPLETE or stopped: requeue it), ERR_RUN or
    ERR_START (the worker adds ERR_SYNC when the final push fails). ``state``: the last
    saved flat user state. ``error``: one line (the traceback's last line, "killed by
    signal 9 (SIGKILL)", ...). ``returncode``: the child's (negative: killed by that signal).
    ``stopped``: a stop was asked of this job. ``started``: the experiment was imported and
    called. ``limit``: the time limit that stopped it ("timeout" or "stall"; then ERR_RUN).
    """

    status: Status
    state: dict[str, Any]
    error: str | None = None
    returncode: int | None = None
    stopped: bool = False
    started: bool = False
    workdir: str | None = None
    limit: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == Status.DONE

    @property
    def incomplete(self) -> bool:
        """The job should be resumed later (INCOMPLETE, or stopped before it finished)."""
        return self.status == Status.START


class JobProcess:
    """One running job: start it, read its saves, wait, signal, stop. Thread-safe."""

    #: Sizes of workdir/stdout and workdir/stderr when the child started (this attempt's
    #: output lies past them: job/logtail.py); None when the output is not redirected.
    output_offsets: dict[str, int] | None = None

    def __init__(self, spec: JobSpec, workdir: Workdir, child: "PopenChild | ForkedChild",
                 read_fd: int, private_dir: str, start_state: dict[str, Any],
                 reserved: dict[str, Any]) -> None:
        self.spec = spec
        self.workdir = workdir
        self.pid = child.pid
        self._child = child
        self._read_fd = read_fd
        # Renewals are sent on a descriptor of their own, closed once the child is reaped (the
        # reader closes its own at the end of file, whenever that comes).
        self._to_child: socket.socket | None = socket.socket(fileno=os.dup(read_fd))
        self._private_dir = private_dir
        self._reserved = reserved
        #: Until when (CLOCK_MONOTONIC) the job's lease is renewed; None: no lease.
        self.renewed_until = spec.renewed_until
        self._lock = threading.Lock()
        self._activity = threading.Event()
        self._done = threading.Event()
        self._reaped = False
        # Bounded: a caller that never takes its saves must not grow us forever (the latest
        # state is always in latest_state and in the outcome).
        self._saves: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_SAVES)
        # channel.report's rows, (step, key, value), in the order they came.
        self._metrics: collections.deque[tuple[int, str, float]] = \
            collections.deque(maxlen=MAX_METRICS)
        self.metrics_dropped = 0
        # Saves whose child waits for a push (one at a time: it waits for the answer).
        self._push_requests: list[dict[str, Any]] = []
        self._latest = start_state
        self._end: dict[str, Any] | None = None
        self._started = False
        #: time.time() when the experiment was imported and about to be called.
        self.started_at: float | None = None
        self._stop_signalled = False
        self._outcome: Outcome | None = None
        self._linger_timer: threading.Timer | None = None
        self._reader = threading.Thread(target=self._read_loop, name=f"job-{self.pid}-pipe",
                                        daemon=True)
        self._waiter = threading.Thread(target=self._wait_loop, name=f"job-{self.pid}-wait",
                                        daemon=True)
        self._reader.start()
        self._waiter.start()

    # --- starting ---------------------------------------------------------------------------

    @classmethod
    def start(cls, spec: JobSpec, *, forkserver: "ForkServer | None" = None) -> "JobProcess":
        """Prepare the workdir (orig.conf on the first run, current.conf marked RUNNING) and
        spawn the child, forked by ``forkserver`` when one is given (and usable: same
        interpreter), else as a new interpreter. StartError (an ERR_START) if that fails."""
        workdir = Workdir(spec.workdir)
        try:
            workdir.create()
            start_state = workdir.starting_state(spec.state, resume=spec.resume,
                                                 job_id=spec.reserved.get(ID_KEY))
            reserved = {k: statemod.check_value(k, v) for k, v in spec.reserved.items()}
            reserved.pop(ERROR_KEY, None)
            reserved[STATUS_KEY] = Status.RUNNING.name
            # orig.conf also names the experiment, so `dbdict run --file orig.conf` reruns it.
            orig = {**statemod.user_keys(statemod.flatten(spec.state)),
                    EXPERIMENT_KEY: spec.experiment}
            workdir.write_orig(orig)
            workdir.write_current({**start_state, **reserved})
        except WorkdirError as e:
            raise StartError(str(e)) from None
        except OSError as e:
            raise StartError(f"cannot prepare workdir {workdir.path}: {e.strerror or e}") from None
        except DbdictError as e:
            raise StartError(f"workdir {workdir.path}: {e}") from None
        try:
            private_dir = scratchdirs.make_private_dir(spec.tempdir_base)  # named for its owner
            scratch = os.path.join(private_dir, "tmp")
            os.mkdir(scratch)
        except OSError as e:
            raise StartError(f"cannot create the job's scratch directory: {e}") from None
        interval = spec.save_interval if spec.save_interval is not None \
            else save_interval_from_env()
        reports = spec.report_interval if spec.report_interval is not None \
            else report_interval_from_env()
        child_spec = {
            "experiment": spec.experiment,
            "report_interval": reports,
            "state": messages.encode_state(start_state),
            "reserved": messages.encode_state(reserved),
            "workdir": str(workdir.path),
            "save_interval": interval,
            "redirect": spec.redirect,
            "python_path": [os.path.abspath(p) for p in spec.python_path],
            "renewed_until": spec.renewed_until,
            "push_interval": spec.push_interval,
            "deadline": spec.deadline,
        }
        spec_path = os.path.join(private_dir, "spec.json")
        read_fd = write_fd = -1
        out = err = offsets = None
        try:
            with open(spec_path, "w", encoding="utf-8") as f:
                json.dump(child_spec, f, allow_nan=True)
            env = child_env({TEMPDIR_ENV: scratch, WORKDIR_ENV: str(workdir.path),
                             **spec.env})
            set_deadline_env(env, spec.deadline)
            if spec.redirect:
                out = open(workdir.stdout, "ab")
                err = open(workdir.stderr, "ab")
                # Earlier attempts' output is in the same files: this one's starts here.
                offsets = {"stdout": os.fstat(out.fileno()).st_size,
                           "stderr": os.fstat(err.fileno()).st_size}
            # A socket pair, not a pipe: the lease renewals go the other way.
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            read_fd, write_fd = ours.detach(), theirs.detach()
            child: PopenChild | ForkedChild | None = None
            if forkserver is not None and spec.python == sys.executable:
                try:
                    child = forkserver.spawn(
                        spec_path=spec_path, cwd=private_dir, env=env, pipe_fd=write_fd,
                        stdout_fd=out.fileno() if out else None,
                        stderr_fd=err.fileno() if err else None)
                except OSError as e:
                    log.warning("fork server unavailable (%s): starting a new interpreter", e)
            if child is None:
                child = PopenChild(subprocess.Popen(
                    [spec.python, "-m", "dbdict_worker.job.runner", spec_path, str(write_fd)],
                    cwd=private_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err, pass_fds=(write_fd,), start_new_session=True))
        except OSError as e:
            if read_fd >= 0:
                os.close(read_fd)
            shutil.rmtree(private_dir, ignore_errors=True)
            raise StartError(f"cannot start the job's process: {e.strerror or e}") from None
        finally:
            if write_fd >= 0:
                os.close(write_fd)  # the child's copy is the only writer: EOF when it exits
            for f in (out, err):
                if f is not None:
                    f.close()
        scratchdirs.mark_job(private_dir, child.pid)  # a worker killed -9: see job/scratch.py
        proc = cls(spec, workdir, child, read_fd, private_dir, start_state, reserved)
        proc.output_offsets = offsets
        return proc

    # --- what the caller reads --------------------------------------------------------------

    def take_saves(self) -> list[dict[str, Any]]:
        """The saves (flat user states) received since the last call, oldest first (at most
        MAX_SAVES: a caller that wants only the newest can use :attr:`latest_state`)."""
        with self._lock:
            saves = list(self._saves)
            self._saves.clear()
        return saves

    def take_push_requests(self) -> list[dict[str, Any]]:
        """The saves (also in :meth:`take_saves`) whose child now waits, at a save point,
        for the workdir to be pushed and :meth:`answer_push` to be called."""
        with self._lock:
            requests, self._push_requests = self._push_requests, []
        return requests

    def take_metrics(self) -> list[tuple[int, str, float]]:
        """The reports (step, key, value) received since the last call, oldest first (at most
        MAX_METRICS: older ones are dropped and counted in :attr:`metrics_dropped`)."""
        with self._lock:
            rows = list(self._metrics)
            self._metrics.clear()
        return rows

    @property
    def latest_state(self) -> dict[str, Any]:
        """The last state the child saved (or the one it started from)."""
        with self._lock:
            return self._latest

    @property
    def started(self) -> bool:
        """True once the experiment was imported and called."""
        return self._started

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def outcome(self) -> Outcome | None:
        """The outcome once the child has exited and been cleaned up, else None."""
        return self._outcome if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Block until the job ends (the Outcome) or ``timeout`` seconds pass (None)."""
        if self._done.wait(timeout):
            return self._outcome
        return None

    def wait_activity(self, timeout: float | None = None) -> bool:
        """Block until a new save arrives or the job ends (True), or the timeout (False)."""
        woke = self._activity.wait(timeout)
        self._activity.clear()
        return woke

    # --- what the caller does ---------------------------------------------------------------

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the child's whole process group; False if it has already exited.

        SIGTERM, SIGINT, SIGUSR2 and SIGKILL mark the job as stopped by us: a death by
        signal then means "stopped" (START), not a crash.
        """
        with self._lock:
            if self._reaped:
                return False
            if sig in _STOPPING:
                self._stop_signalled = True
            return _killpg(self.pid, sig)

    def terminate(self) -> bool:
        """SIGTERM to the group: the experiment's switch() now returns 'stop'."""
        return self.signal(signal.SIGTERM)

    def kill(self) -> bool:
        """SIGKILL to the group (its last saved state is kept)."""
        return self.signal(signal.SIGKILL)

    def renew(self, until: float) -> bool:
        """Tell the child its lease is renewed until ``until`` (CLOCK_MONOTONIC), and resume
        its group if it is paused and ``until`` is still ahead; True if it was resumed."""
        data = messages.encode({"kind": messages.RENEWED, "until": until})
        with self._lock:
            self.renewed_until = until  # what lease_held() answers, even once it has exited
            if self._reaped or self._to_child is None:
                return False
            try:
                # Never blocks. A child stopped for hours could leave no room for this one:
                # it then stops again on reading an older deadline, until the next renewal.
                self._to_child.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                pass
            if until <= time.monotonic() or not _group_stopped(self.pid):
                return False
            return _killpg(self.pid, signal.SIGCONT)

    def lease_held(self) -> bool:
        """Whether the job's lease is renewed for now (always, without a lease). Its copy in
        the exproot is written only then: once the lease has lapsed, another worker may have
        rescued the job and be reading that copy."""
        until = self.renewed_until
        return until is None or time.monotonic() < until

    def answer_push(self, pushed: bool) -> None:
        """Let the child waiting at a save point go on (``pushed``: the push succeeded)."""
        data = messages.encode({"kind": messages.PUSHED, "ok": bool(pushed)})
        with self._lock:
            if self._reaped or self._to_child is None:
                return
            try:
                self._to_child.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:  # it has died meanwhile: nobody waits
                pass

    def prune(self) -> None:
        """Tell the child a search's pruner ends it early: its channel.switch() now returns
        'prune' (an experiment that never asks is stopped by the caller, :class:`JobRun`)."""
        data = messages.encode({"kind": messages.PRUNE})
        with self._lock:
            if self._reaped or self._to_child is None:
                return
            try:
                self._to_child.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                pass

    def pause(self) -> bool:
        """SIGSTOP the child's whole group (its lease could not be renewed in time); False if
        it has already exited. :meth:`renew` resumes it, :meth:`kill` ends it."""
        with self._lock:
            return not self._reaped and _killpg(self.pid, signal.SIGSTOP)

    def stop(self, grace: float) -> Outcome:
        """SIGTERM, up to ``grace`` seconds to save and return, then SIGKILL; the Outcome."""
        self.terminate()
        outcome = self.wait(grace)
        if outcome is None:
            log.info("job process %d did not stop within %.3g s: killing it", self.pid, grace)
            self.kill()
            outcome = self.wait()
        assert outcome is not None
        return outcome

    # --- the watching threads ---------------------------------------------------------------

    def _read_loop(self) -> None:
        buffer = messages.LineBuffer()
        try:
            while True:
                try:
                    chunk = os.read(self._read_fd, 1 << 16)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                for message in buffer.feed(chunk):
                    self._handle(message)
        finally:
            os.close(self._read_fd)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        try:
            if kind == messages.STARTED:
                self.started_at = time.time()
                self._started = True
            elif kind == messages.SAVE:
                state = messages.decode_state(message["state"])
                with self._lock:
                    self._saves.append(state)
                    self._latest = state
                    if message.get("push"):
                        self._push_requests.append(state)
            elif kind == messages.METRICS:
                rows = [(int(step), str(key), float(value))
                        for step, key, value in message["rows"]]
                with self._lock:
                    room = MAX_METRICS - len(self._metrics)
                    if len(rows) > room:
                        self.metrics_dropped += len(rows) - room
                    self._metrics.extend(rows)
                return  # reports wake nobody: they are taken in batches
            elif kind == messages.END:
                state = messages.decode_state(message["state"])
                with self._lock:
                    self._end = message
                    self._latest = state
                self._arm_linger()
        except (KeyError, TypeError, ValueError):
            log.warning("job process %d: ignored a malformed %r message", self.pid, kind)
            return
        self._activity.set()

    def _arm_linger(self) -> None:
        # The outcome is known; a child that then fails to exit (a stray non-daemon thread)
        # must not hold its slot forever.
        timer = threading.Timer(self.spec.linger, self._kill_lingering)
        timer.daemon = True
        self._linger_timer = timer
        timer.start()

    def _kill_lingering(self) -> None:
        with self._lock:
            if not self._reaped:
                log.warning("job process %d reported its outcome but did not exit within "
                            "%.3g s: killing it", self.pid, self.spec.linger)
                _killpg(self.pid, signal.SIGKILL)

    def _wait_loop(self) -> None:
        self._child.wait_exited()
        with self._lock:
            returncode = self._child.reap_group()
            self._reaped = True
            if self._to_child is not None:
                self._to_child.close()
                self._to_child = None
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        # The child wrote its last message before exiting; the reader gets it, then EOF
        # (bounded, in case a process that escaped the group still holds the pipe).
        self._reader.join(timeout=5.0)
        try:
            self._outcome = self._finish(returncode)
        except Exception as e:  # never leave a waiter hanging
            log.exception("job process %d: cannot record its outcome", self.pid)
            self._outcome = Outcome(Status.ERR_RUN, self.latest_state,
                                    error=f"cannot record the outcome: {e}",
                                    returncode=returncode, workdir=str(self.workdir.path))
        finally:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._done.set()
            self._activity.set()

    def _finish(self, returncode: int) -> Outcome:
        with self._lock:
            end, latest, stopped = self._end, self._latest, self._stop_signalled
        common = dict(returncode=returncode, stopped=stopped, started=self._started,
                      workdir=str(self.workdir.path))
        if end is not None:
            return Outcome(Status[end["status"]], messages.decode_state(end["state"]),
                           error=end.get("error"), **common)
        # Died without reporting: current.conf holds its last flushed save (it is written
        # before the save message is sent, so it may be one save newer than ``latest``).
        try:
            current = self.workdir.read_current()
            state = statemod.user_keys(current) if current is not None else latest
        except WorkdirError:
            current, state = None, latest
        written = final_status(current, returncode)
        if written is not None:  # it ended cleanly, but its end message never reached us
            return Outcome(written, state, error=current.get(ERROR_KEY), **common)
        reason = describe_returncode(returncode)
        if stopped:
            status, error = Status.START, f"stopped: {reason}"
        else:
            status, error = Status.ERR_RUN, reason
        final = {**state, **self._reserved, STATUS_KEY: status.name, ERROR_KEY: error}
        try:
            self.workdir.write_current(final)
        except (OSError, DbdictError) as e:
            log.warning("job process %d: cannot update %s: %s", self.pid,
                        self.workdir.current_conf, e)
        return Outcome(status, state, error=error, **common)


def final_status(current: Mapping[str, Any] | None, returncode: int) -> Status | None:
    """The outcome the runner wrote in current.conf, for a child that exited 0 without
    sending its end message (an experiment that closed every descriptor, ours included).

    What this relies on: current.conf says RUNNING from the start of the attempt
    (:meth:`JobProcess.start` writes it) and through every save (the runner keeps the
    reserved status RUNNING); only the runner's last step, ``_Child.finish``, writes another
    status, with the final state and error, just before the end message and a clean exit.
    An experiment that exits 0 on its own (os._exit) leaves RUNNING: a failure, as before."""
    if returncode != 0 or current is None:
        return None
    try:
        status = Status[str(current.get(STATUS_KEY))]
    except KeyError:
        return None
    return status if status in (Status.DONE, Status.START, Status.ERR_RUN,
                                Status.ERR_START, Status.PRUNED) else None


__all__ = ["JobSpec", "JobProcess", "Outcome", "StartError"]
