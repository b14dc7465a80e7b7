"""The experiment-side channel (the README's "The channel" section) and the pipe's message
framing."""
from __future__ import annotations

import math
import os
import signal

import pytest

from dbdict_worker import DD
from dbdict_worker.job import messages
from dbdict_worker.channel import STOP, Channel, save_interval_from_env
from dbdict_worker.errors import StateError
from dbdict_worker.state import flatten


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_channel(interval: float = 1.0):
    flushed: list[dict] = []
    clock = Clock()
    state = DD(step=0)
    ch = Channel(state, sink=lambda st: flushed.append(flatten(st)), save_interval=interval,
                 clock=clock)
    return ch, state, flushed, clock


def test_switch_is_none_until_stop_then_stays_stop():
    ch, _, _, _ = make_channel()
    assert ch.switch() is None and ch() is None
    ch.request_stop()
    assert ch.switch() == STOP
    assert ch() == "stop"
    assert ch.switch() == "stop", "switch keeps saying stop once asked"


def test_first_save_is_immediate_later_ones_are_coalesced():
    ch, state, flushed, clock = make_channel(interval=1.0)
    state.step = 1
    ch.save()
    assert flushed == [{"step": 1}], "a save after a quiet period is written at once"
    for step in range(2, 50):
        state.step = step
        ch.save()
        assert ch.switch() is None
    assert len(flushed) == 1, "saves within the interval are coalesced"
    clock.now += 1.0
    state.step = 50  # moved on from the files of step 49's save
    assert ch.switch() is None
    assert len(flushed) == 1, "switch never writes: the state may be ahead of the files"
    ch.save()
    assert flushed[-1] == {"step": 50}, "the first save after the interval is written"


def test_pending_save_is_flushed_when_stop_is_first_reported():
    ch, state, flushed, clock = make_channel(interval=60.0)
    ch.save()
    state.step = 7
    ch.save()
    assert flushed == [{"step": 0}]
    ch.request_stop()
    assert ch.save_and_switch() == "stop"
    assert flushed[-1] == {"step": 7}, "the experiment may be killed soon: write now"


def test_interval_zero_writes_every_save():
    ch, state, flushed, _ = make_channel(interval=0)
    for step in range(5):
        state.step = step
        ch.save()
    assert [f["step"] for f in flushed] == [0, 1, 2, 3, 4]


def test_unstorable_value_raises_at_save_naming_the_key():
    ch, state, _, _ = make_channel()
    state.model = object()
    with pytest.raises(StateError, match="model"):
        ch.save()


def test_no_sink_means_saves_are_noops():
    ch = Channel(DD(a=1))
    ch.save()
    assert ch.save_and_switch() is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2])
def test_stop_signals_only_set_the_flag(sig):
    ch, _, _, _ = make_channel()
    before = signal.getsignal(sig)
    with ch:
        os.kill(os.getpid(), sig)
        assert ch.switch() == "stop"
    assert signal.getsignal(sig) is before, "handlers are restored"


def test_save_interval_from_env(monkeypatch):
    monkeypatch.setenv("DBDICT_SAVE_INTERVAL", "0.25")
    assert save_interval_from_env() == 0.25
    monkeypatch.setenv("DBDICT_SAVE_INTERVAL", "nonsense")
    assert save_interval_from_env() == 1.0
    monkeypatch.setenv("DBDICT_SAVE_INTERVAL", "-3")
    assert save_interval_from_env() == 1.0
    monkeypatch.delenv("DBDICT_SAVE_INTERVAL")
    assert save_interval_from_env(2.0) == 2.0


# --- the pipe --------------------------------------------------------------------------------

def test_state_keeps_exact_types_on_the_wire():
    flat = {"a": (1, [2.5, float("nan")]), "b": [1, (2,)], "c": float("inf"), "d": None,
            "e": True, "f": "x\ny", "g": 2**62}
    line = messages.encode({"kind": "save", "state": messages.encode_state(flat)})
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    (msg,) = list(messages.LineBuffer().feed(line))
    back = messages.decode_state(msg["state"])
    assert back["a"][0] == 1 and isinstance(back["a"], tuple) and math.isnan(back["a"][1][1])
    assert back["b"] == [1, (2,)] and isinstance(back["b"][1], tuple)
    assert back["c"] == float("inf") and back["d"] is None and back["e"] is True
    assert back["f"] == "x\ny" and back["g"] == 2**62


def test_line_buffer_uses_only_complete_lines():
    buf = messages.LineBuffer()
    one = messages.encode({"kind": "save", "state": {"step": 1}})
    two = messages.encode({"kind": "end", "status": "DONE", "error": None, "state": {}})
    got = list(buf.feed(one + two[:10]))
    assert [m["kind"] for m in got] == ["save"]
    assert buf.partial == 10, "a half-written message (a dying child) is held, not used"
    assert [m["kind"] for m in buf.feed(two[10:])] == ["end"]
    assert list(buf.feed(b'{"kind": "save", "sta\n' + b"not json\n" + b"[1]\n")) == [], \
        "malformed lines are skipped"
