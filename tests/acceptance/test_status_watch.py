"""``dbdict status --watch``: the real command, its output read as it comes while a real
worker runs jobs. Frames follow the counts and show the live workers; Ctrl-C ends it with
status 0; a pipe gets plain frames, a terminal a redraw in place sized to it; an outage is
said in the frame and survived; --json gives one JSON object per line."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import termios
import threading

from sqlalchemy.engine import make_url

from tests.acceptance.conftest import BIN
from tests.support.proxy import Proxy
from tests.support.waiting import wait_for

SPIN = "dbdict_worker.examples.spin"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Watch:
    """A running ``dbdict status --watch --interval 0.3``; what it wrote, read as it comes
    (from a pipe, or from the master side of a pseudo-terminal with ``tty=True``)."""

    def __init__(self, url: str, cwd, *args: str, tty: bool = False,
                 size: tuple[int, int] = (100, 50)) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DBDICT_") and k not in ("COLUMNS", "LINES")}
        env.update({"DBDICT_DB": url, "DBDICT_RETRY_SECONDS": "3"})
        if not tty:
            env["COLUMNS"] = str(size[0])  # what a pipe is drawn as wide as
        self.master = -1
        out = subprocess.PIPE
        if tty:
            self.master, slave = pty.openpty()
            self.resize(*size, fd=slave)
            out = slave
        self.proc = subprocess.Popen(
            [str(BIN / "dbdict"), "status", "--watch", "--interval", "0.3", *args],
            stdout=out, stderr=subprocess.PIPE, cwd=cwd, env=env)
        if tty:
            os.close(slave)
        self.fd = self.master if tty else self.proc.stdout.fileno()
        self.data = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def resize(self, cols: int, rows: int, fd: int | None = None) -> None:
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ,
                    struct.pack("HHHH", rows, cols, 0, 0))

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty whose other end closed (EIO on Linux)
                return
            if not chunk:
                return
            self.data += chunk

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def frames(self) -> list[str]:
        """The frames written so far, ANSI codes removed (the last may be incomplete)."""
        plain = ANSI.sub("", self.text).replace("\r", "")  # a pty ends lines with \r\n
        return re.split(r"(?m)^dbdict status  ", plain)[1:]

    def wait_frame(self, pattern: str, timeout: float = 12.0) -> str:
        """The first frame matching ``pattern`` (a regex) written after those seen so far."""
        start = len(self.frames())
        return wait_for(lambda: next((f for f in self.frames()[max(0, start - 1):]
                                      if re.search(pattern, f)), None),
                        timeout, f"a frame matching {pattern!r}; got:\n{self.text[-3000:]}")

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C; returns (exit status, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(5)
        if self.master >= 0:
            os.close(self.master)
        return self.proc.returncode, err.decode()


def done_counts(frames: list[str]) -> list[int]:
    return [int(m.group(1)) for f in frames if (m := re.search(r"\bDONE (\d+)\b", f))]


def test_frames_follow_a_real_worker_and_ctrl_c_exits_0(cli, db_url, workers):
    cli("dbdict-enqueue", SPIN, "seconds=0.8", "n={{1,2,3}}", "--table", "sweep")
    watch = Watch(db_url, cli.cwd)
    try:
        first = watch.wait_frame(r"START 3\s+RUNNING 0\s+DONE 0")
        assert "sweep  0/3 finished  0%  ETA ?" in first and "workers: none live" in first
        worker = workers(db_url, "w", "--table", "sweep", "--until-empty", "--slots", "1")
        host = socket.gethostname()
        # The worker appears with its host, its slot and the job it runs.
        busy = watch.wait_frame(rf"(?m)^  {re.escape(host[:30])}\S* +running +1 .* \d+$")
        assert "workers: 1 live" in busy and "RUNNING 1" in busy
        last = watch.wait_frame(r"\bDONE 3\b")
        assert "sweep  3/3 finished  100%  all finished" in last
        assert re.search(r"(?m)^  [0-9.]+/h, [0-9.]+/min over the last 5 min "
                         r"\(3 DONE, 0 failed in the last hour\)$", last), last
        assert worker.wait() == 0
        status, err = watch.interrupt()
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
    assert status == 0 and err == ""
    seen = done_counts(watch.frames())
    # Frames followed the jobs one by one, never going back.
    assert seen == sorted(seen) and {0, 3} <= set(seen) and set(seen) & {1, 2}, seen
    # Not a terminal: frames one after the other, plain text a log file can keep.
    assert "\x1b" not in watch.text and "\r" not in watch.text
    assert all(len(line) <= 100 for line in watch.text.splitlines())


def test_on_a_terminal_it_redraws_in_place_at_the_terminal_width(pg_cli, pg_url):
    pg_cli("dbdict-enqueue", SPIN, "n={{1,2}}", "--table", "a-sweep-with-a-long-name")
    watch = Watch(pg_url, pg_cli.cwd, tty=True, size=(60, 40))
    try:
        watch.wait_frame(r"START 2")
        wait_for(lambda: watch.text.count("\x1b[H") >= 2, 10, "a second frame")
        watch.resize(34, 40)  # the terminal narrows: the next frames follow
        watch.wait_frame(r"(?m)^\[\.{32}\]$", timeout=5)
        status, err = watch.interrupt()
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
    assert status == 0 and err == ""
    text = watch.text
    # The first frame clears the screen; the next ones go home and overwrite, erasing what
    # the previous frame left beyond them.
    assert text.startswith("\x1b[H\x1b[2Jdbdict status  ")
    later = text.split("\x1b[H")[2:]
    assert later and all(f.startswith("dbdict status  ") and "\x1b[2J" not in f for f in later)
    assert all("\x1b[J" in f for f in later[:-1])
    assert text.endswith("\x1b[J\r\n")  # Ctrl-C leaves the frame, the prompt below it
    for frame in later:  # each line fits the terminal it was drawn for: no wrapping
        lines = ANSI.sub("", frame).replace("\r", "").splitlines()
        assert all(len(line) <= 60 for line in lines)
    assert all(len(line) <= 34 for line in ANSI.sub("", later[-1]).splitlines())


def test_an_outage_is_said_in_the_frame_and_survived(pg_cli, pg_url):
    pg_cli("dbdict-enqueue", SPIN, "n={{1,2}}", "--table", "sweep")
    # A password in the URL (trust authentication ignores it): no frame may show it.
    proxy = Proxy(make_url(pg_url).set(password="hunter2").render_as_string(False))
    assert "hunter2" in proxy.url
    watch = Watch(proxy.url, pg_cli.cwd)
    try:
        watch.wait_frame(r"START 2")
        proxy.cut()
        down = watch.wait_frame(r"database unreachable, retrying")
        assert "START 2" in down and "last read at" in down  # the last counts stay shown
        proxy.restore()
        back = watch.wait_frame(r"^(?![\s\S]*unreachable)[\s\S]*START 2")
        assert "workers: none live" in back
        status, err = watch.interrupt()
    finally:
        proxy.close()
        if watch.proc.poll() is None:
            watch.proc.kill()
    assert status == 0 and err == ""
    assert "hunter2" not in watch.text


def test_json_gives_one_overview_per_line(pg_cli, pg_url):
    pg_cli("dbdict-enqueue", SPIN, "n={{1,2}}", "--table", "sweep")
    watch = Watch(pg_url, pg_cli.cwd, "--json")
    try:
        wait_for(lambda: watch.text.count("\n") >= 3, 10, "three JSON lines")
        status, err = watch.interrupt()
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
    assert status == 0 and err == ""
    lines = [json.loads(line) for line in watch.text.splitlines()]
    assert len(lines) >= 3
    for obj in lines:
        assert [t["table"] for t in obj["tables"]] == ["sweep"]
        assert obj["tables"][0]["counts"]["START"] == 2 and obj["workers"] == []


def test_options_it_cannot_honour_are_refused_in_one_line(cli):
    cases = [(["--watch", "--by", "lr"], "--by cannot be combined with --watch"),
             (["--watch", "--where", "lr=1"], "--where and --status do not apply"),
             (["--watch", "-s", "DONE"], "--where and --status do not apply"),
             (["--interval", "3"], "--interval goes with --watch"),
             (["--watch", "--interval", "0"], "x>=0.1")]
    for args, message in cases:
        proc = cli("dbdict", "status", *args, ok=False, timeout=20)
        assert proc.returncode == 2, (args, proc)
        assert message in proc.stderr and proc.stdout == "", (args, proc.stderr)
        if "Usage" not in proc.stderr:
            assert len(proc.stderr.splitlines()) == 1
