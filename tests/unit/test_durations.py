"""Durations on the command line (dbdict_worker/durations.py): what is read, what is refused
with one line, and what is written back."""
from __future__ import annotations

import pytest

from dbdict_worker.durations import format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("6h", 21600.0), ("1d", 86400.0),
    ("0.2s", 0.2), (".5m", 30.0), ("1.5h", 5400.0), ("1h30m", 5400.0), (" 2 S ", 2.0),
    ("0", 0.0), (7, 7.0), (0.25, 0.25),
])
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "abc", "-1", "-1s", "1x", "1e3", "nan", "inf",
                                  "1h 30", "1,5h", "1..2s", True, float("inf"), -3])
def test_refused_in_one_line(text):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    message = str(info.value)
    assert "\n" not in message and "duration" in message


@pytest.mark.parametrize("seconds, text", [
    (21600, "6h"), (900, "15m"), (5400, "90m"), (90, "90s"), (0.2, "0.2s"), (86400, "1d"),
    (172800, "2d"), (90000, "25h"), (59.537, "59.5s"), (0, "0s"), (3601, "3601s"),
    (7199.4, "1h59m59s"),
])
def test_format(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.2, 2, 59, 60, 61, 90, 900, 5400, 21600, 86400, 7199.4])
def test_format_reads_back(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.5)
