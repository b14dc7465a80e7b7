"""The job's child process: ``python -m dbdict_worker.job.runner SPEC_FILE FD``.

Started by :class:`dbdict_worker.job.process.JobProcess` in its own session, in the job's private
directory (it moves into the workdir once its own imports are done), with fds 1/2 already
pointing at ``workdir/stdout`` and ``workdir/stderr`` (when redirected). It needs no database:
it reads its spec from SPEC_FILE (then deletes it), talks to the parent over the pipe FD
(:mod:`dbdict_worker.job.messages`), and:

1. makes SIGTERM/SIGINT/SIGUSR2 set the stop flag before it imports the experiment, so a stop
   during a slow import is not lost (a stop in the first few ms, while this module loads, kills
   the process: the parent reports that as "stopped", which is the same outcome);
2. imports the experiment (failure: ERR_START with the import error) or prepares the command;
3. runs it with a :class:`~dbdict_worker.channel.Channel` whose flushes write ``current.conf``
   and send a ``save`` message;
4. writes the final ``current.conf`` (with ``dbdict.status``/``dbdict.error``) and sends one
   ``end`` message: DONE (COMPLETE), START (INCOMPLETE), ERR_RUN (raised) or ERR_START, or
   PRUNED when the parent sent PRUNE and the experiment returned (whatever it returned).

``channel.report`` flushes go to the parent as ``metrics`` messages (the last one before the
end message).

Meanwhile a watchdog thread (:mod:`dbdict_worker.job.watchdog`) reads what the parent sends and
pauses the whole job when the worker could not renew its lease in time.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
# Everything is imported before the user's directories go first on sys.path, so that a
# project file named like a module we use (string.py, subprocess.py) cannot replace it.
import traceback
from typing import Any, Mapping

from dbdict_worker import signals
from dbdict_worker.job import cmdexp
from dbdict_worker.job import messages, watchdog
from dbdict_worker.channel import Channel
from dbdict_worker.constants import COMPLETE, INCOMPLETE, Status
from dbdict_worker.errors import ResolveError
from dbdict_worker.state import expand, flatten, resolve, user_keys
from dbdict_worker.job.workdir import (ERROR_KEY, STATUS_KEY, TEMPDIR_ENV, Workdir,
                                       describe_os_error)

#: Longest error line kept in dbdict.error (the full traceback is in workdir/stderr).
MAX_ERROR = 2000


def one_line(text: str) -> str:
    """Collapse whitespace (tracebacks' last lines can span lines) and bound the length."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 1] + "…"


#: Errors that mean the disk, not the experiment's code, failed: named first in dbdict.error.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException | None) -> str | None:
    """``no space left on device (ENOSPC) writing PATH`` when ``exc`` (or an exception it
    was raised from or while handling) is a full disk or quota, else None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            where = f" writing {exc.filename}" if exc.filename else ""
            return describe_os_error(OSError(exc.errno, exc.strerror)) + where
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _identity(fd: int) -> tuple[int, int] | None:
    """What ``fd`` refers to (device, inode); None once it is closed."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Child:
    """Everything the child does, around one experiment call."""

    def __init__(self, spec: Mapping[str, Any], fd: int, channel: Channel) -> None:
        self.fd = fd
        self._fd_identity = _identity(fd)
        self.pipe_ok = True
        self.channel = channel
        self.experiment: str = spec["experiment"]
        self.workdir = Workdir(spec["workdir"])
        self.redirect = bool(spec.get("redirect", True))
        self.reserved = messages.decode_state(spec.get("reserved", {}))
        self.user = messages.decode_state(spec["state"])
        #: The last user state that was flushed (what survives an unstorable later value).
        self.saved = dict(self.user)
        #: With an exproot: seconds between the save points at which the parent pushes the
        #: workdir while we wait (None: never wait; the first save point pushes at once).
        interval = spec.get("push_interval")
        self.push_interval = None if interval is None else float(interval)
        self._last_push = float("-inf")
        self._pushed = threading.Event()

    # --- the pipe ---------------------------------------------------------------------------

    def send(self, message: Mapping[str, Any]) -> None:
        if not self.pipe_ok:
            return
        try:
            if _identity(self.fd) != self._fd_identity:
                # The experiment closed our socket (os.closerange) and the number now names
                # a file of its own: write nothing there. current.conf tells the parent.
                raise OSError(errno.EBADF, "the socket to the worker was closed")
            messages.write_message(self.fd, message)
        except OSError:
            # The parent is gone: nobody will record what we do, so ask the experiment to
            # save and return, as if it had been told to stop.
            self.pipe_ok = False
            self.channel.request_stop()

    # --- saving -----------------------------------------------------------------------------

    def sink(self, state: Mapping[str, Any]) -> None:
        """A channel flush: check, write current.conf, tell the parent."""
        user = user_keys(flatten(state))
        self.persist(user)

    def persist(self, user: dict[str, Any]) -> None:
        self.workdir.write_current({**user, **self.reserved})
        self.saved = user
        push = self.push_interval is not None and self.pipe_ok and \
            time.monotonic() - self._last_push >= self.push_interval
        self._pushed.clear()
        self.send({"kind": messages.SAVE, "state": messages.encode_state(user), "push": push})
        if push:
            # A save point: the files on disk belong to this state, so the experiment waits
            # while they are pushed with it (a push while it runs could copy a later
            # checkpoint next to this state).
            while self.pipe_ok and not self._pushed.wait(1.0):
                pass
            self._last_push = time.monotonic()

    def send_metrics(self, rows: list) -> None:
        """A metrics flush of the channel: to the parent, which writes them in batches."""
        self.send({"kind": messages.METRICS, "rows": rows})

    def on_message(self, message: Mapping[str, Any]) -> None:
        """A message from the parent (in the watchdog's thread): a push's answer, a prune."""
        kind = message.get("kind")
        if kind == messages.PUSHED:
            self._pushed.set()
        elif kind == messages.PRUNE:
            self.channel.request_prune()

    def orphaned(self) -> None:
        """The parent is gone: stop, and wait for no push answer."""
        self.pipe_ok = False
        self._pushed.set()
        self.channel.request_stop()

    def finish(self, status: Status, error: str | None, user: dict[str, Any]) -> None:
        """Write the final current.conf and send the end message (the last reports first)."""
        try:
            self.channel.flush_metrics()
        except Exception:  # a sink failing at the end must not lose the outcome
            pass
        final = {**user, **self.reserved, STATUS_KEY: status.name}
        if error is not None:
            final[ERROR_KEY] = error
        try:
            self.workdir.write_current(final)
        except Exception as e:  # disk full, or a value the parent sent us that cannot be written
            why = disk_full(e) or str(e)
            error = one_line(f"{error + '; ' if error else ''}cannot write current.conf: {why}")
            status = Status.ERR_RUN
        self.send({"kind": messages.END, "status": status.name, "error": error,
                   "state": messages.encode_state(user)})

    def report_exception(self, exc: BaseException) -> str:
        """Print the traceback (to workdir/stderr too when not redirected); its last line."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # workdir/stderr on a full disk: the error line below still says why
        if not self.redirect:
            self.workdir.append_stderr(text)
        last = traceback.format_exception_only(type(exc), exc)[-1]
        full = disk_full(exc)
        return one_line(f"{full}: {last}" if full else last)

    # --- running ----------------------------------------------------------------------------

    def run(self) -> None:
        if cmdexp.is_command(self.experiment):
            self.run_command()
        else:
            self.run_python()

    def run_python(self) -> None:
        try:
            fn = resolve(self.experiment)
            if not callable(fn):
                raise TypeError(f"experiment {self.experiment!r} is a "
                                f"{type(fn).__name__}, not a callable")
        except Exception as e:
            error = self.report_exception(e)
            if isinstance(e, ResolveError):  # its message already says what failed, in full
                error = one_line(str(e))
            self.finish(Status.ERR_START, error, self.user)
            return
        state = expand({**self.user, **self.reserved})
        self.channel.state = state
        self.send({"kind": messages.STARTED})
        status, error = Status.DONE, None
        try:
            result = fn(state, self.channel)
            if self.channel.prune_requested:
                status = Status.PRUNED  # whatever it returned: it was asked to end early
            elif result is COMPLETE:
                status = Status.DONE
            elif result is INCOMPLETE:
                status = Status.START
            else:
                status, error = Status.ERR_RUN, one_line(
                    f"experiment returned {result!r}; return COMPLETE (None) or "
                    f"INCOMPLETE (True)")
        except SystemExit as e:
            if e.code not in (None, 0):
                status, error = Status.ERR_RUN, one_line(
                    f"experiment called sys.exit({e.code!r})")
        except BaseException as e:
            status, error = Status.ERR_RUN, self.report_exception(e)
        try:
            user = user_keys(flatten(state))
        except Exception as e:  # an unstorable value: keep the last good save
            user = self.saved
            note = one_line(f"final state not saved: {e}")
            sys.stderr.write(note + "\n")
            status, error = Status.ERR_RUN, (f"{error}; {note}" if error else note)
        self.finish(status, error, user)

    def run_command(self) -> None:
        try:
            template = cmdexp.CommandTemplate.decode(self.experiment)
        except cmdexp.CommandError as e:
            self.finish(Status.ERR_START, str(e), self.user)
            return
        poll = min(max(self.channel.save_interval, 0.05), 1.0)
        try:
            status, error, user = cmdexp.run_command(
                template, self.user, self.reserved, workdir=self.workdir.path,
                tempdir=os.environ.get(TEMPDIR_ENV, ""), poll=poll,
                stop_requested=lambda: self.channel.stop_requested,
                on_started=lambda: self.send({"kind": messages.STARTED}),
                on_save=self.persist, report=self.channel.report)
        except Exception as e:
            status, error, user = Status.ERR_RUN, self.report_exception(e), self.saved
        self.finish(status, error and one_line(error), user)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child; returns 0 once the end message is sent."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m dbdict_worker.job.runner SPEC_FILE FD\n"
                         "(started by dbdict-worker and dbdict run, not by hand)\n")
        return 2
    # Before anything slow: a stop asked while the experiment imports becomes 'stop'.
    channel = Channel(None)
    channel.install_signal_handlers()  # for the process's life, as the next one
    # SIGUSR1 drains the worker; when it is sent to the whole unit (`systemctl kill`, a
    # batch system signalling the job's process tree), the experiment must not die of it.
    # Ignoring survives exec, so a command experiment's programs are spared too.
    signals.install({signal.SIGUSR1: signal.SIG_IGN})
    spec_path, fd = args[0], int(args[1])
    os.set_inheritable(fd, False)  # programs the experiment starts must not hold our pipe
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    os.unlink(spec_path)
    channel.save_interval = float(spec.get("save_interval", 1.0))
    channel.report_interval = float(spec.get("report_interval", 1.0))
    channel.deadline = spec.get("deadline")  # channel.time_left()
    # We were started in the job's private directory, so that `-m` put that (and not the
    # workdir, where a file named json.py or ast.py would shadow the standard library) first
    # on sys.path. Now: the parent's python_path there instead, and cwd = the workdir.
    if sys.path and os.path.realpath(sys.path[0] or ".") == \
            os.path.realpath(os.path.dirname(os.path.abspath(spec_path))):
        del sys.path[0]
    sys.path[:0] = list(spec.get("python_path", ()))
    os.chdir(spec["workdir"])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # so `tail -f workdir/stdout` shows lines
        except (AttributeError, ValueError):
            pass
    child = _Child(spec, fd, channel)
    channel.sink = child.sink
    channel.metrics_sink = child.send_metrics
    # A worker's job never runs past the lease its worker renewed; an orphaned job stops.
    watchdog.start(fd, spec.get("renewed_until"), on_orphaned=child.orphaned,
                   on_message=child.on_message)
    try:
        child.run()
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
