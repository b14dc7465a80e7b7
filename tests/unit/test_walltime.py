"""The walltime's logic with a fake clock: when a worker stops booking, when it stops its jobs,
what each job is told (channel.time_left), and where the limit comes from (--walltime, SLURM)."""
from __future__ import annotations

import datetime
import time

import pytest

from dbdict_worker.channel import DEADLINE_ENV, Channel, set_deadline_env
from dbdict_worker.errors import UsageError
from dbdict_worker.worker import walltime as wallmod
from dbdict_worker.worker.walltime import Walltime


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _walltime(seconds, **kw):
    clock, wall = Clock(1000.0), Clock(1_700_000_000.0)
    return Walltime(seconds, clock=clock, wall=wall, **kw), clock, wall


def test_books_until_min_remaining_then_stops_jobs_grace_plus_margin_before_the_end():
    w, clock, _ = _walltime(4 * 3600, min_remaining=1800, grace=60)
    assert w.margin == 60  # 5% of 4h is 12 min: capped at 60 s
    assert w.time_left(clock.t) == 4 * 3600
    assert w.may_book(clock.t + 4 * 3600 - 1800)
    assert not w.may_book(clock.t + 4 * 3600 - 1799)
    assert not w.stop_due(clock.t + 4 * 3600 - 121)
    assert w.stop_due(clock.t + 4 * 3600 - 120)  # grace 60 + margin 60


def test_the_margin_scales_down_for_short_walltimes_but_not_below_a_second():
    assert wallmod.margin_for(120) == 6
    assert wallmod.margin_for(8) == 1
    assert wallmod.margin_for(4 * 3600) == 60


def test_default_min_remaining_is_five_minutes_or_twice_the_grace():
    assert _walltime(3600, grace=60)[0].min_remaining == 300
    assert _walltime(3600, grace=600)[0].min_remaining == 1200


def test_no_walltime_means_no_limit():
    w, clock, _ = _walltime(None)
    assert w.time_left(clock.t) is None and w.stop_at is None
    assert w.may_book(clock.t + 1e9) and not w.stop_due(clock.t + 1e9)
    assert w.job_deadline() is None
    called = []
    w.tick(clock.t + 1e9, drain=lambda: called.append("drain"),
           stop=lambda: called.append("stop"))
    assert called == []


def test_booking_ends_when_the_stop_is_due_even_with_a_small_min_remaining():
    w, clock, _ = _walltime(100, min_remaining=0, grace=10)  # stop 15 s before the end
    assert w.may_book(clock.t + 84)
    assert not w.may_book(clock.t + 85)


def test_tick_drains_then_stops_once_each():
    w, clock, _ = _walltime(60, min_remaining=20, grace=5)  # margin 3: stop with 8 s left
    called: list[str] = []
    actions = dict(drain=lambda: called.append("drain"), stop=lambda: called.append("stop"))
    w.tick(clock.t + 39, **actions)
    assert called == []
    w.tick(clock.t + 40, **actions)
    w.tick(clock.t + 45, **actions)
    assert called == ["drain"]
    w.tick(clock.t + 52, **actions)
    w.tick(clock.t + 70, **actions)  # a second stop would kill the jobs at once
    assert called == ["drain", "stop"]


def test_a_walltime_shorter_than_grace_and_margin_stops_at_once():
    w, clock, _ = _walltime(30, grace=60)
    called: list[str] = []
    w.tick(clock.t, drain=lambda: called.append("drain"), stop=lambda: called.append("stop"))
    assert called == ["drain", "stop"]


def test_job_deadline_is_the_stop_time_or_the_jobs_own_timeout_whichever_first():
    w, clock, wall = _walltime(600, min_remaining=60, grace=30)  # stop at 600 - 30 - 30
    clock.t += 100
    wall.t += 100
    assert w.job_deadline() == wall.t + 440
    assert w.job_deadline(timeout=60) == wall.t + 60
    assert w.job_deadline(timeout=1000) == wall.t + 440
    unlimited = _walltime(None)[0]
    assert unlimited.job_deadline(timeout=90) == unlimited._wall() + 90


def test_channel_time_left_counts_down_to_the_deadline_and_is_none_without_one():
    assert Channel(None).time_left() is None
    left = Channel(None, deadline=time.time() + 100).time_left()
    assert 99 < left <= 100
    assert Channel(None, deadline=time.time() - 5).time_left() == 0.0


def test_the_deadline_env_var_is_whole_epoch_seconds_or_absent():
    env = {DEADLINE_ENV: "123"}  # inherited from elsewhere: not ours
    set_deadline_env(env, None)
    assert DEADLINE_ENV not in env
    set_deadline_env(env, 1_700_000_123.9)
    assert env[DEADLINE_ENV] == "1700000123"


def test_walltime_option_counts_from_now_and_wins_over_slurm():
    slurm = {"SLURM_JOB_ID": "42", "SLURM_JOB_END_TIME": "1700009999"}
    end, least = wallmod.from_options("4h", "30m", env=slurm, wall=lambda: 1_700_000_000.0)
    assert (end, least) == (1_700_000_000.0 + 4 * 3600, 1800)


def test_slurm_job_end_time_is_read_without_a_walltime_option():
    slurm = {"SLURM_JOB_ID": "42", "SLURM_JOB_END_TIME": "1700009999"}
    assert wallmod.from_options(None, None, env=slurm) == (1700009999.0, None)
    assert wallmod.from_options("", "", env=slurm) == (1700009999.0, None)  # empty env vars
    assert wallmod.from_options(None, None, env={}) == (None, None)


def test_squeue_end_times_parse_as_local_time_or_mean_no_end():
    local = datetime.datetime(2031, 5, 1, 14, 30, 0).timestamp()
    assert wallmod.parse_squeue_time("2031-05-01T14:30:00\n") == local
    for none in ("N/A", "Unknown", "NONE", "", "\n"):
        assert wallmod.parse_squeue_time(none) is None
    with pytest.raises(ValueError):
        wallmod.parse_squeue_time("soon")


def test_unreadable_slurm_end_is_a_warning_and_no_limit(caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue here
    caplog.set_level("WARNING")
    assert wallmod.slurm_end({"SLURM_JOB_ID": "42"}) is None
    assert "cannot read the end of SLURM job 42" in caplog.text


@pytest.mark.parametrize("option,value", [("--walltime", "soon"), ("--walltime", "0"),
                                          ("--min-remaining", "-5m")])
def test_bad_durations_are_usage_errors_naming_the_option(option, value):
    args = ("4h", value) if option == "--min-remaining" else (value, None)
    with pytest.raises(UsageError, match=f"^{option}"):
        wallmod.from_options(*args, env={})


def test_log_durations_are_short_and_rounded():
    assert wallmod.format_duration(4 * 3600 - 3) == "3h59m57s"
    assert wallmod.format_duration(2.46) == "2.5s"
    assert wallmod.format_duration(-1) == "0s"
