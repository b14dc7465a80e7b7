"""Time limits of an attempt (dbdict_worker/job/limits.py): the CPU time of a real process
group, and when a job is timed out or stalled (on a clock the test moves)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.job.limits import Limits, group_cpu
from dbdict_worker.job.process import Outcome
from dbdict_worker.job.workdir import Workdir
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


def _group(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_group_cpu_counts_a_busy_group_not_a_sleeping_one():
    busy = _group("import os\nos.fork()\nwhile True: pass")  # two busy processes
    idle = _group("import time\ntime.sleep(60)")
    try:
        wait_for(lambda: (group_cpu(busy.pid) or (0, 0))[0] > 0.3, 20, "CPU time to add up")
        before = group_cpu(idle.pid)
        time.sleep(0.3)
        after = group_cpu(idle.pid)
        assert after is not None and before is not None
        assert after[0] - before[0] < 0.05 and not after[1]
        os.killpg(idle.pid, signal.SIGSTOP)
        wait_for(lambda: group_cpu(idle.pid)[1], 5, "the group to show as stopped")
    finally:
        for p in (busy, idle):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    # Once every process of the group is gone (the orphaned one reaped by init), nothing.
    wait_for(lambda: group_cpu(busy.pid) == (0.0, False), 10, "the group to be gone")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _limits(tmp_path, cpu: list, *, timeout=None, stall_after=None) -> tuple[Limits, Clock]:
    clock = Clock()
    limits = Limits(123, [tmp_path / "stdout", tmp_path / "stderr"], timeout=timeout,
                    stall_after=stall_after, clock=clock, cpu=lambda pgid: cpu[0])
    return limits, clock


def _run(limits: Limits, clock: Clock, seconds: float, *, step: float = 0.1,
         each=lambda: None) -> float | None:
    """Advance the clock in steps; the time at which a limit was hit, or None."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now += step
        each()
        if limits.hit(False):
            return clock.now
    return None


def test_timeout_is_wall_time(tmp_path):
    cpu = [(0.0, False)]
    limits, clock = _limits(tmp_path, cpu, timeout=2.0)
    hit = _run(limits, clock, 5, each=lambda: cpu.__setitem__(0, (cpu[0][0] + 0.1, False)))
    assert hit == pytest.approx(102.0, abs=0.11)  # busy or not
    assert limits.fired == ("timeout", "timeout after 2s")
    assert not limits.hit(False)  # once


def test_a_silent_idle_job_is_stalled_a_busy_or_talking_one_is_not(tmp_path):
    cpu = [(1.0, False)]
    limits, clock = _limits(tmp_path, cpu, stall_after=2.0)
    # CPU time that keeps growing: never stalled.
    assert _run(limits, clock, 10, each=lambda: cpu.__setitem__(0, (cpu[0][0] + 0.05, False))) \
        is None
    # A few clock ticks now and then (a thread that wakes) are not work: stalled.
    ticks = iter(range(10**6))
    hit = _run(limits, clock, 10, each=lambda: cpu.__setitem__(
        0, (cpu[0][0] + (0.01 if next(ticks) % 30 == 0 else 0), False)))
    assert hit is not None and hit - 110.0 == pytest.approx(2.0, abs=0.6)
    assert limits.fired == ("stall", "stalled: no save, output or CPU time for 2s")


def test_output_saves_and_a_paused_group_are_signs_of_life(tmp_path):
    cpu = [(1.0, False)]
    limits, clock = _limits(tmp_path, cpu, stall_after=2.0)
    out = tmp_path / "stderr"

    def write():
        with open(out, "a") as f:
            f.write("x")
    assert _run(limits, clock, 10, each=write) is None
    for _ in range(100):  # saves, every 0.1 s
        clock.now += 0.1
        assert not limits.hit(True)
    cpu[0] = (1.0, True)  # SIGSTOPped by its lease: not a hang
    assert _run(limits, clock, 10) is None
    cpu[0] = (1.0, False)
    assert _run(limits, clock, 10) is not None


def test_without_proc_no_job_is_judged_stalled(tmp_path):
    clock = Clock()
    limits = Limits(1, [], timeout=None, stall_after=1.0, clock=clock, cpu=lambda pgid: None)
    assert _run(limits, clock, 10) is None


def test_the_outcome_after_a_limit_is_err_run_with_its_state(tmp_path):
    workdir = Workdir(tmp_path / "wd")
    workdir.create()
    workdir.write_current({"step": 4, "dbdict.status": "RUNNING"})
    cpu = [(0.0, False)]
    limits, clock = _limits(tmp_path, cpu, timeout=1.0)
    stopped = Outcome(Status.START, {"step": 4}, error="stopped: killed by signal 9 (SIGKILL)",
                      stopped=True)
    assert limits.ended(stopped, workdir) is stopped  # no limit hit: as it ended
    _run(limits, clock, 2)
    ended = limits.ended(stopped, workdir)
    assert (ended.status, ended.error, ended.limit, ended.state) == \
        (Status.ERR_RUN, "timeout after 1s", "timeout", {"step": 4})
    current = workdir.read_current()
    assert current["dbdict.status"] == "ERR_RUN" and current["step"] == 4
    assert current["dbdict.error"] == "timeout after 1s"
    done = Outcome(Status.DONE, {"step": 5})
    assert limits.ended(done, workdir) is done  # it finished in time after all
