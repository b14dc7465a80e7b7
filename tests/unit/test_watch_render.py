"""``dbdict status --watch`` frames, rendered from crafted overview dicts (the shape of
``dbdict_worker.dashboard.data.overview``): what a person reads in the terminal."""
from __future__ import annotations

import io

import pytest

from dbdict_worker.cli import watch
from dbdict_worker.constants import Status

NOW = "2026-12-01T18:00:00+00:00"


def table(name: str = "sweep", eta: float | None = 1200.0, **counts: int) -> dict:
    full = {s.name: counts.get(s.name, 0) for s in Status}
    total = sum(full.values())
    finished = total - full["START"] - full["RUNNING"]
    minutes = [{"t": NOW, "done": 0, "failed": 0} for _ in range(60)]
    minutes[-1]["done"] = 6
    minutes[-2]["done"] = 3
    return {"table": name, "counts": full, "total": total, "finished": finished,
            "progress": finished / total if total else 0.0,
            "done_last_hour": full["DONE"], "failed_last_hour": full["ERR_RUN"],
            "per_minute": minutes, "rate_per_hour": float(finished), "eta_seconds": eta,
            "failures": [{"id": 7, "status": "ERR_RUN", "finished_at": NOW,
                          "error": "Traceback ...\nValueError: lr too large"}]
            if full["ERR_RUN"] else []}


def worker(host: str, *, lost: bool = False, jobs=(12, 13), age: float = 2.5) -> dict:
    return {"id": f"{host}-1", "host": host, "pid": 1, "slots": 2, "gpus": "0,1",
            "state": "running", "heartbeat_age": age, "lost": lost, "draining": False,
            "jobs": list(jobs)}


def overview(*tables: dict, workers=()) -> dict:
    return {"now": NOW, "tables": list(tables), "failed_total": 0, "workers": list(workers)}


def test_a_frame_shows_counts_progress_rates_eta_and_workers():
    frame = watch.render(overview(table(START=6, RUNNING=2, DONE=10, ERR_RUN=2),
                                  workers=[worker("node-a")]), 100, interval=2)
    lines = frame.splitlines()
    assert "every 2s" in lines[0]
    assert "sweep  12/20 finished  60%  ETA 20m00s" in frame
    bar = next(line for line in lines if line.startswith("["))
    assert len(bar) == 100 and bar.count("#") == int(0.6 * 98)
    assert "START 6  RUNNING 2  DONE 10  ERR_RUN 2" in frame
    assert "ERR_SYNC" not in frame  # statuses no job has stay out of the way
    assert "12/h, 1.8/min over the last 5 min (10 DONE, 2 failed in the last hour)" in frame
    assert "failed #7 ERR_RUN: ValueError: lr too large" in frame
    assert "workers: 1 live" in frame
    row = next(line for line in lines if "node-a" in line)
    assert row.split() == ["node-a", "running", "2", "0,1", "2s", "12", "13"]


def test_a_lost_worker_is_flagged():
    frame = watch.render(overview(table(RUNNING=2), workers=[
        worker("alive"), worker("gone", lost=True, jobs=[14], age=95)]), 100)
    assert "workers: 1 live, 1 LOST" in frame
    gone = next(line for line in frame.splitlines() if "gone" in line)
    assert "LOST" in gone and "1m35s" in gone and gone.endswith("14  <- lost")
    alive = next(line for line in frame.splitlines() if "alive" in line)
    assert "LOST" not in alive and "lost" not in alive


@pytest.mark.parametrize("seconds, text", [
    (0.4, "ETA 0s"), (59.6, "ETA 1m00s"), (312, "ETA 5m12s"), (3720, "ETA 1h02m"),
    (2 * 86400 + 3 * 3600 + 59, "ETA 2d03h"), (None, "ETA ?"),
])
def test_eta_formatting(seconds, text):
    assert watch.format_eta(table(START=3, DONE=1, eta=seconds)) == text


def test_nothing_left_or_nothing_at_all():
    assert watch.format_eta(table(DONE=3, eta=None)) == "all finished"
    assert watch.format_eta(table(eta=None)) == "no jobs"
    frame = watch.render(overview(table()), 80)  # a table whose jobs were all deleted
    assert "sweep  0/0 finished  -  no jobs" in frame
    assert "START 0  RUNNING 0  DONE 0" in frame
    assert "workers: none live" in frame
    empty = watch.render(overview(), 80)  # a database with no table yet
    assert "no jobs (no table yet)" in empty and "Traceback" not in empty


@pytest.mark.parametrize("width", [20, 32, 45])
def test_narrow_terminals_get_lines_that_fit(width):
    many_jobs = list(range(1000, 1040))
    frame = watch.render(overview(table("a-rather-long-table-name", START=100, RUNNING=40,
                                        DONE=500, ERR_RUN=3, CANCELED=1),
                                  workers=[worker("node-with-a-long-hostname.cluster.example",
                                                  jobs=many_jobs)]), width)
    lines = frame.splitlines()
    assert all(len(line) <= width for line in lines), [l for l in lines if len(l) > width]
    # The counts wrap onto more lines rather than being cut.
    counts = " ".join(lines)
    for part in ("START 100", "RUNNING 40", "DONE 500", "ERR_RUN 3", "CANCELED 1"):
        assert part in counts


def test_a_long_job_list_says_how_many_are_not_shown():
    frame = watch.render(overview(table(RUNNING=40), workers=[
        worker("n1", jobs=list(range(1000, 1040)))]), 60)
    row = next(line for line in frame.splitlines() if "n1" in line)
    assert len(row) <= 60
    shown = row.split()[5:]
    assert shown[-1] == f"+{40 - len(shown[:-1])}" and shown[0] == "1000"


def test_an_unreachable_database_is_said_over_the_last_frame():
    ov = overview(table(START=1, DONE=1), workers=[worker("n1")])
    frame = watch.render(ov, 80, notice=watch.UNREACHABLE + " (connection refused)")
    assert "!! database unreachable, retrying (connection refused)" in frame
    assert "last read at" in frame and "DONE 1" in frame  # the last counts stay visible
    first = watch.render(None, 80, notice=watch.UNREACHABLE)
    assert "database unreachable, retrying" in first and "workers" not in first


def test_sparkline_scales_to_the_busiest_minute():
    assert watch.sparkline([0, 1, 5, 10], 4) == "_.+@"
    assert watch.sparkline([0, 0], 10) == "__"
    assert watch.sparkline(list(range(100)), 5) == "@@@@@"  # the last 5 of 100


def test_screen_redraws_in_place_on_a_terminal_and_appends_elsewhere(monkeypatch):
    tty = io.StringIO()
    screen = watch.Screen(tty, tty=True)
    monkeypatch.setenv("COLUMNS", "80")  # what shutil.get_terminal_size reads first
    monkeypatch.setenv("LINES", "5")
    screen.show("a\nb")
    screen.show("\n".join("123456"))  # taller than the 5-line terminal
    screen.close()
    text = tty.getvalue()
    assert text.startswith("\x1b[H\x1b[2Ja\x1b[K\nb\x1b[K\x1b[J")
    second = text.split("\x1b[J", 1)[1]
    assert second.startswith("\x1b[H1\x1b[K\n") and "more lines" in second
    assert second.count("\n") == 5  # 4 lines + the note; the last newline is close()'s
    plain = io.StringIO()
    screen = watch.Screen(plain, tty=False)
    screen.show("a\nb")
    screen.show("c")
    screen.close()
    assert plain.getvalue() == "a\nb\n\nc\n"
