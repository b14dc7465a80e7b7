"""What the soaks (:mod:`tests.soak.chaos`, :mod:`tests.soak.pressure`) share: a run directory,
a private PostgreSQL, and real ``dbdict-worker start`` processes that a driver starts, kills,
stops and judges, then cleans up after.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from tests.soak import checks
from tests.support.pgcluster import PgServer, server_unavailable
from dbdict_worker.store import Store

#: The resumable example the soaks run: its result shows a wrongly resumed run.
LOOP = "dbdict_worker.examples.loop"
#: A driver's pacing between looks at the queue (not a correctness wait).
TICK = 0.5
#: The role workers log in as when the driver asks for one (``Fleet.start_server``): their
#: sessions are then the only ones with this ``usename``, which a driver can aim at.
WORKER_ROLE = "dbdict_soak_worker"


@dataclasses.dataclass
class WorkerSettings:
    """How every worker of a run is started."""

    slots: int = 2
    lease: float = 3.0
    grace: float = 5.0
    heartbeat: float = 0.5
    poll_interval: float = 0.5
    save_interval: float = 0.25


class WorkerProc:
    """One ``dbdict-worker start`` process (its output goes to a log file)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log_path = log
        self._offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                         start_new_session=True)  # Ctrl-C is the driver's
        self.term_at: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def announced(self) -> bool:
        """Whether it logged "worker ... started" (its signal handlers are in place)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            return b" started: " in f.read()


class Fleet:
    """A run directory with a private PostgreSQL and W worker slots; :meth:`cleanup` stops
    everything (call it in a ``finally``). Failures go to ``fail``."""

    def __init__(self, workers: int, settings: WorkerSettings, *, prefix: str,
                 root: str | None, fail: Callable[[str], None]) -> None:
        self.settings = settings
        self.fail = fail
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        os.chmod(self.dir, 0o755)  # the server runs as postgres when we are root
        self.exproot = self.dir / "exproot"  # a symlink an outage may repoint
        self.server: PgServer | None = None
        self.engine: sa.Engine | None = None
        self.worker_url: str | None = None
        self.workers: list[WorkerProc | None] = [None] * workers
        #: Workers that connect elsewhere than the server (through a proxy), by index.
        self.urls: dict[int, str] = {}
        self.killed_pids: set[int] = set()
        self.unexpected_exits = 0
        self.sigterm_before_ready = 0

    def start_server(self, *, durable: bool, settings: dict[str, str] | None = None,
                     worker_role: bool = False) -> str:
        """Start the private PostgreSQL (with extra ``postgresql.conf`` ``settings``), create
        the schema and the exproot; the superuser URL. With ``worker_role`` the workers log
        in as :data:`WORKER_ROLE` (no superuser: the reserved connections are not theirs)."""
        self.server = PgServer(self.dir / "pg", durable=durable).init()
        if settings:
            with open(self.server.data / "postgresql.conf", "a") as f:
                f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.server.start()
        url = self.server.url()
        with Store.open(url, check_schema=False) as store:
            store.upgrade()
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.worker_url = url
        if worker_role:
            password = self.server.password  # random per server, never in argv
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"CREATE ROLE {WORKER_ROLE} LOGIN PASSWORD '{password}'")
                conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {WORKER_ROLE}")
                conn.exec_driver_sql(
                    f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {WORKER_ROLE}")
            self.worker_url = url.replace(f"//{self.server.user}:", f"//{WORKER_ROLE}:", 1)
        (self.dir / "exproot.d").mkdir()
        self.exproot.symlink_to(self.dir / "exproot.d")
        (self.dir / "logs").mkdir()
        return url

    def start_worker(self, k: int, url: str | None = None) -> WorkerProc:
        """Start worker ``k`` (replacing a stopped one), against ``url`` (default: the one
        it had, else the server as the workers' role)."""
        s = self.settings
        exe = Path(sys.executable).parent / "dbdict-worker"
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "dbdict_worker.cli.worker"]
        argv += ["start", "--slots", str(s.slots), "--heartbeat", str(s.heartbeat),
                 "--lease", str(s.lease), "--poll-interval", str(s.poll_interval),
                 "--grace", str(s.grace),
                 "--exproot", str(self.exproot), "--workdir-base", str(self.dir / "local")]
        env = {k_: v for k_, v in os.environ.items() if not k_.startswith("DBDICT_")}
        assert self.worker_url is not None
        # DBDICT_CHAOS_RUN marks every process the workers start (see checks.processes_in).
        if url is not None:
            self.urls[k] = url
        env.update(DBDICT_DB=self.urls.get(k, self.worker_url),
                   DBDICT_SAVE_INTERVAL=str(s.save_interval),
                   DBDICT_CHAOS_RUN=str(self.dir))
        w = WorkerProc(argv, env, self.dir / "logs" / f"worker{k}.log", self.dir)
        self.workers[k] = w
        return w

    def sigkill(self, w: WorkerProc) -> None:
        """SIGKILL (cannot be caught: the wait returns at once), remembered as a kill."""
        w.proc.kill()
        w.proc.wait(30)
        self.killed_pids.add(w.proc.pid)

    def stop_bound(self) -> float:
        # The grace, the final pushes' retries, and the supervisor's 30 s for final writes.
        return self.settings.grace + 60.0

    def service(self, now: float) -> int:
        """Restart workers that stopped after a SIGTERM (or died on their own: a failure);
        how many were restarted."""
        restarted = 0
        for k, w in enumerate(self.workers):
            if w is None:
                continue
            rc = w.proc.poll()
            if rc is None:
                if w.term_at is not None and now - w.term_at > self.stop_bound():
                    self.fail(f"worker {w.proc.pid} ignored SIGTERM for "
                              f"{self.stop_bound():.0f}s")
                    self.sigkill(w)
                continue
            self.judge_exit(w, rc)
            self.start_worker(k)
            restarted += 1
        return restarted

    def judge_exit(self, w: WorkerProc, rc: int) -> None:
        """A worker we did not SIGKILL must exit 0 after SIGTERM, and never by itself."""
        if w.proc.pid in self.killed_pids:
            return
        if w.term_at is None:
            self.unexpected_exits += 1
            self.fail(f"worker {w.proc.pid} exited by itself with {rc} ({w.log_path})")
        elif rc == -signal.SIGTERM and not w.announced():
            # Killed by the signal before its handlers were installed (still importing or
            # opening the store): nothing was booked yet. Counted, not a failure.
            self.sigterm_before_ready += 1
        elif rc != 0:
            self.fail(f"worker {w.proc.pid} exited {rc} after SIGTERM ({w.log_path})")

    def stop_workers(self) -> None:
        """SIGTERM every live worker and judge how each one ended (bounded)."""
        live = []
        for w in self.workers:
            if w is None:
                continue
            if w.alive():
                w.proc.send_signal(signal.SIGTERM)  # a second one for a stopping worker
                w.term_at = w.term_at or time.monotonic()
                live.append(w)
            else:  # stopped after a SIGTERM of the storm, not restarted since
                self.judge_exit(w, w.proc.returncode)
        deadline = time.monotonic() + self.stop_bound()
        for w in live:
            try:
                rc = w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.fail(f"worker {w.proc.pid} did not stop on SIGTERM ({w.log_path})")
                self.sigkill(w)
                continue
            self.judge_exit(w, rc)

    def orphans(self) -> list[str]:
        """Job processes left over once the workers are gone ("pid command"); a failure if
        any."""
        # Job processes of SIGKILLed workers notice at their next save (the pipe is broken)
        # and stop, and a fork server ends after its last child: give them a bounded while.
        deadline = time.monotonic() + 15.0
        while True:
            left = checks.processes_in(self.dir)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if left:
            self.fail(f"{len(left)} job process(es) outlived their workers")
        return [f"{pid} {cmd}" for pid, cmd in left]

    def killed_worker_ids(self, conn: sa.Connection, also: set[int] = frozenset()) -> set[str]:
        """The ids (``workers`` rows) of the worker processes we SIGKILLed, and of those with
        the pids ``also``."""
        pids = conn.execute(sa.text("SELECT id, pid FROM workers")).all()
        return {wid for wid, pid in pids if pid in self.killed_pids or pid in also}

    def cleanup(self, keep: bool) -> str | None:
        """Kill what is left, stop the server, remove the directory unless ``keep`` (then
        its path)."""
        for w in self.workers:
            if w is not None and w.alive():
                w.proc.kill()
                w.proc.wait(30)
        for pid, _ in checks.processes_in(self.dir):  # processes of our own workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.engine is not None:
            self.engine.dispose()
        if self.server is not None:
            self.server.stop("immediate")
        if keep:
            return str(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        return None


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options every soak command has: --fast, --keep, --root, --json."""
    p.add_argument("--fast", action="store_true", help="PostgreSQL with fsync off")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs, data)")
    p.add_argument("--root", metavar="DIR", help="where to make the run directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def cli_prelude(prog: str) -> int | None:
    """Before a soak command runs: 2 (and why, on stderr) when no private PostgreSQL can be
    started here; else None, with SIGTERM made to unwind like Ctrl-C."""
    why = server_unavailable()
    if why:
        print(f"{prog}: cannot start a private PostgreSQL: {why}", file=sys.stderr)
        return 2

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through the cleanup, like Ctrl-C

    signal.signal(signal.SIGTERM, interrupted)
    return None


__all__ = ["LOOP", "TICK", "Fleet", "add_run_options", "cli_prelude", "WorkerProc",
           "WorkerSettings", "WORKER_ROLE"]
