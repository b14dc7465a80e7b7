"""channel.report (intermediate metrics, coalesced like saves) and the prune request, with an
injected clock."""
from __future__ import annotations

import math

import pytest

from dbdict_worker import DD
from dbdict_worker.channel import PRUNE, STOP, Channel, report_interval_from_env
from dbdict_worker.errors import StateError
from dbdict_worker.job import messages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_channel(report_interval: float = 1.0, save_interval: float = 3600.0):
    sent: list[list] = []
    saves: list[dict] = []
    clock = Clock()
    ch = Channel(DD(step=0), sink=lambda st: saves.append(dict(st)), clock=clock,
                 save_interval=save_interval, metrics_sink=sent.append,
                 report_interval=report_interval)
    return ch, sent, saves, clock


def test_the_first_report_is_sent_then_only_the_latest_per_key_once_per_interval():
    ch, sent, _, clock = make_channel()
    ch.report(0, loss=2.0)
    assert sent == [[[0, "loss", 2.0]]]
    for step in range(1, 100):
        clock.now += 0.005
        ch.report(step, loss=1.0 / step, acc=step)
    assert len(sent) == 1  # all coalesced: 0.5 s < 1 s
    clock.now += 0.6
    ch.report(100, loss=0.01)
    assert len(sent) == 2
    assert sorted(sent[1]) == [[99, "acc", 99.0], [100, "loss", 0.01]]


def test_a_state_flush_sends_the_pending_reports_first():
    ch, sent, saves, clock = make_channel(report_interval=3600)
    ch.report(0, loss=1.0)  # the first: sent at once
    ch.report(1, loss=0.5)
    assert len(sent) == 1
    ch.save()  # the first save flushes: reports go with it
    assert sent[-1] == [[1, "loss", 0.5]] and len(saves) == 1
    ch.flush()
    assert len(sent) == 2  # nothing pending: no empty message


def test_a_stop_or_a_prune_sends_the_pending_reports():
    ch, sent, _, _ = make_channel(report_interval=3600)
    ch.report(0, a=1)
    ch.report(1, a=2)
    assert ch.switch() is None and len(sent) == 1
    ch.request_stop()
    assert ch.switch() == STOP and sent[-1] == [[1, "a", 2.0]]
    ch2, sent2, _, _ = make_channel(report_interval=3600)
    ch2.report(0, a=1)
    ch2.report(5, a=3)
    ch2.request_prune()
    assert ch2.save_and_switch() == PRUNE and sent2[-1] == [[5, "a", 3.0]]


def test_values_become_floats_and_non_numbers_are_refused_naming_the_key():
    ch, sent, _, _ = make_channel()
    ch.report(3, n=4, ok=True, nan=float("nan"))
    (rows,) = sent
    values = {k: v for _, k, v in rows}
    assert values["n"] == 4.0 and type(values["n"]) is float and values["ok"] == 1.0
    assert math.isnan(values["nan"])
    with pytest.raises(StateError, match="'name'.*numbers only"):
        ch.report(4, name="resnet")
    with pytest.raises(StateError, match="'v'"):
        ch.report(4, v=None)


@pytest.mark.parametrize("step", [-1, 1.5, "3", True, None])
def test_a_step_must_be_an_int_not_below_zero(step):
    ch, _, _, _ = make_channel()
    with pytest.raises(StateError, match="step"):
        ch.report(step, loss=1.0)


def test_numpy_like_integral_steps_are_accepted():
    numpy = pytest.importorskip("numpy")
    ch, sent, _, _ = make_channel()
    ch.report(numpy.int64(7), loss=numpy.float32(0.5))
    assert sent == [[[7, "loss", 0.5]]] and type(sent[0][0][0]) is int


def test_prune_makes_switch_say_prune_and_keep_saying_it():
    ch, _, saves, _ = make_channel()
    assert not ch.should_prune() and ch.switch() is None
    ch.request_prune()
    assert ch.should_prune()
    assert ch.switch() == PRUNE and ch() == PRUNE
    ch.request_stop()  # a stop after a prune: still a prune (the job ends PRUNED)
    assert ch.switch() == PRUNE
    assert ch.save_and_switch() == PRUNE and saves  # the prune's save is written now


def test_without_a_metrics_sink_reports_are_dropped_at_each_flush():
    ch = Channel(DD(), report_interval=0)
    for step in range(10):
        ch.report(step, loss=1.0)
    assert ch._metrics == {}


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DBDICT_REPORT_INTERVAL", "0.25")
    assert report_interval_from_env() == 0.25
    monkeypatch.setenv("DBDICT_REPORT_INTERVAL", "soon")
    assert report_interval_from_env() == 1.0


def test_metrics_rows_survive_the_wire():
    rows = [[1, "loss", 0.5], [2, "nan", float("nan")]]
    (message,) = messages.LineBuffer().feed(
        messages.encode({"kind": messages.METRICS, "rows": rows}))
    assert message["rows"][0] == [1, "loss", 0.5] and math.isnan(message["rows"][1][2])


@pytest.mark.parametrize("line, parsed", [
    ("3 loss=0.5", (3, {"loss": 0.5})),
    ("0 loss=nan acc=1", (0, {"loss": math.nan, "acc": 1.0})),
    ("  7\tval.top1=0.25  ", (7, {"val.top1": 0.25})),
    ("3", None), ("x loss=1", None), ("-1 loss=1", None), ("3 loss", None),
    ("3 loss=abc", None), ("3 =1", None), ("1.5 loss=1", None),
])
def test_a_command_experiments_report_lines(line, parsed):
    from dbdict_worker.job.cmdreports import parse_line

    got = parse_line(line)
    if parsed is None or got is None:
        assert got == parsed
    else:
        assert got[0] == parsed[0] and got[1].keys() == parsed[1].keys()
        assert all(v == parsed[1][k] or (math.isnan(v) and math.isnan(parsed[1][k]))
                   for k, v in got[1].items())


def test_a_report_file_is_read_from_its_size_at_the_start_by_complete_lines(tmp_path):
    from dbdict_worker.job.cmdreports import ReportFile

    path = tmp_path / "metrics.log"
    path.write_text("1 loss=9\n")  # an earlier attempt's, reported then
    got = []
    reports = ReportFile(path, lambda step, **m: got.append((step, m)))
    with open(path, "a") as f:
        f.write("2 loss=0.5\n3 loss=0.")
    reports.read()
    assert got == [(2, {"loss": 0.5})]
    with open(path, "a") as f:
        f.write("25\n")
    reports.read()
    assert got[-1] == (3, {"loss": 0.25})
