"""A warm interpreter that forks job processes: each job still gets its own process, without
paying for a new Python and its imports (~50 ms) every time.

The server is started with :mod:`subprocess` (a clean interpreter that shares nothing with the
worker: no database connections, no threads, no signal handlers), imports the job runner once,
and then forks one child per request. Requests and replies travel over a ``SOCK_SEQPACKET``
socket pair; the job's pipe and output files are passed as file descriptors (SCM_RIGHTS).

Each child calls ``setsid()`` (its own process group, which the worker signals as usual),
sets the job's environment, working directory and fds 1/2, and runs
:func:`dbdict_worker.job.runner.main`. The server reaps its children: when one exits it first
kills whatever is left in the child's process group (the exited leader is still a zombie, so
its group id cannot have been reused), then reaps it and reports the exit status.

:class:`ForkServer` is the worker's side: ``spawn()`` returns a :class:`ForkedChild` whose
``wait_exited()``/``reap_group()`` mirror what :class:`~dbdict_worker.job.process.JobProcess`
does with a :class:`subprocess.Popen`. If the server dies, spawns fail with OSError and
JobProcess falls back to a plain subprocess.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Mapping

from dbdict_worker import signals
from dbdict_worker.job.childenv import child_env

log = logging.getLogger("dbdict_worker")

MAX_MESSAGE = 1 << 20
#: Set to 0 to start every job with a new interpreter instead.
ENV_SWITCH = "DBDICT_FORKSERVER"


def enabled() -> bool:
    """Whether workers use a fork server (``DBDICT_FORKSERVER=0`` turns it off)."""
    return os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "no", "false", "off")


# ---------------------------------------------------------------------------------------------
# The worker's side


class ForkedChild:
    """A job process forked by the server: what JobProcess needs of it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._exited = threading.Event()
        self.returncode: int | None = None

    def wait_exited(self) -> None:
        """Block until the server reports the exit (it has killed the group and reaped)."""
        self._exited.wait()

    def reap_group(self) -> int:
        """The exit status (already reaped by the server, which also killed the group)."""
        assert self.returncode is not None
        return self.returncode

    def _ended(self, returncode: int) -> None:
        self.returncode = returncode
        self._exited.set()


class ForkServer:
    """Starts the server process lazily; ``spawn()`` is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._children: dict[int, ForkedChild] = {}
        # Exits reported before spawn() had registered the child (a job that ends at once can
        # be reaped before the thread that asked for it wakes up).
        self._early_exits: dict[int, int] = {}
        self._replies: list[dict[str, Any]] = []
        self._reply = threading.Condition(self._lock)
        self._spawning = threading.Lock()
        self._reader: threading.Thread | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The server's own environment is what /proc/PID/environ of every job shows (a
            # forked child keeps the memory it was exec'ed with): never the worker's secrets.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "dbdict_worker.job.forkserver", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=child_env(),
                start_new_session=True, cwd="/")
        finally:
            theirs.close()
        self._sock = ours
        self._reader = threading.Thread(target=self._read_loop, args=(ours,),
                                        name="forkserver-reader", daemon=True)
        self._reader.start()

    def spawn(self, *, spec_path: str, cwd: str, env: Mapping[str, str], pipe_fd: int,
              stdout_fd: int | None, stderr_fd: int | None) -> ForkedChild:
        """Fork a job process running the runner on ``spec_path``; OSError if the server is
        not available."""
        fds = [pipe_fd] + [fd for fd in (stdout_fd, stderr_fd) if fd is not None]
        request = json.dumps({"spec": spec_path, "cwd": cwd, "env": dict(env),
                              "stdout": stdout_fd is not None,
                              "stderr": stderr_fd is not None}).encode()
        # One request at a time, up to its reply: replies name no request, and waiting on the
        # condition lets the lock go, so another spawn() could otherwise take this one's pid.
        with self._spawning, self._lock:
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    log.warning("the fork server died: starting a new one")
                self._start()
            assert self._sock is not None
            self._replies.clear()  # a reply that came after its spawn() gave up
            socket.send_fds(self._sock, [request], fds)
            while not self._replies:
                if not self._reply.wait(timeout=30):
                    raise OSError("the fork server did not answer")
            reply = self._replies.pop(0)
            if "error" in reply:
                raise OSError(reply["error"])
            child = ForkedChild(reply["pid"])
            if child.pid in self._early_exits:
                child._ended(self._early_exits.pop(child.pid))
            else:
                self._children[child.pid] = child
            return child

    def _read_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            with self._lock:
                if "exit" in message:
                    child = self._children.pop(message["exit"], None)
                    if child is not None:
                        child._ended(message["returncode"])
                    else:
                        self._early_exits[message["exit"]] = message["returncode"]
                else:
                    self._replies.append(message)
                    self._reply.notify_all()
        # The server is gone: its children were in its care; report them as killed.
        with self._lock:
            for child in self._children.values():
                child._ended(-signal.SIGKILL)
            self._children.clear()
            self._replies.append({"error": "the fork server exited"})
            self._reply.notify_all()

    def close(self) -> None:
        """Stop the server (its running children are not touched: they end on their own)."""
        with self._lock:
            if self._sock is not None:
                # shutdown, not just close: it wakes our reader's blocked recv, and the server
                # sees the end of the conversation at once.
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._sock.close()
                self._sock = None
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None


# ---------------------------------------------------------------------------------------------
# The server


def _child(request: dict[str, Any], fds: list[int], sock: socket.socket) -> None:
    """In the forked child: become the job process, never return."""
    code = 1
    try:
        sock.close()
        os.setsid()
        # The server's handlers are not the job's: back to the defaults (the runner installs
        # its own), for good.
        signals.install(signals.same_handler(
            (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1), signal.SIG_DFL))
        signal.set_wakeup_fd(-1)
        pipe_fd, rest = fds[0], fds[1:]
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        for target, wanted in ((1, request["stdout"]), (2, request["stderr"])):
            if wanted:
                fd = rest.pop(0)
                os.dup2(fd, target)
                os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        from dbdict_worker.job import runner

        code = runner.main([request["spec"], str(pipe_fd)])
    except BaseException:  # noqa: BLE001 - the child must end with a status, whatever happens
        try:
            import traceback

            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(sock: socket.socket) -> None:
    """The server's loop: fork on requests, report exits, end when the worker goes away."""
    from dbdict_worker.job import runner  # noqa: F401 - the point: imported once, before forking

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    # For the server's life: SIGCHLD only wakes the select (through the wakeup fd), and the
    # worker, not a Ctrl-C on its terminal, decides when the server goes.
    signals.install({signal.SIGCHLD: lambda *_: None, signal.SIGINT: signal.SIG_IGN})
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    open_ = True
    while open_ or children:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is wake_r:
                os.read(wake_r, 4096)
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
            except OSError:
                data, fds = b"", []
            if not data:
                open_ = False
                selector.unregister(sock)
                continue
            request = json.loads(data)
            try:
                pid = os.fork()
            except OSError as e:
                for fd in fds:
                    os.close(fd)
                sock.send(json.dumps({"error": f"fork failed: {e}"}).encode())
                continue
            if pid == 0:
                _child(request, list(fds), sock)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            sock.send(json.dumps({"pid": pid}).encode())
        _reap(children, sock if open_ else None)


def _reap(children: set[int], sock: socket.socket | None) -> None:
    for pid in list(children):
        try:
            # WNOWAIT: the exited leader stays a zombie, so its group id cannot be reused
            # while we kill what it left behind.
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            children.discard(pid)
            continue
        if info is None:
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, status = os.waitpid(pid, 0)
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if sock is not None:
            try:
                sock.send(json.dumps({"exit": pid, "returncode": code}).encode())
            except OSError:
                pass


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
