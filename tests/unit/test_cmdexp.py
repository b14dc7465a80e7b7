"""Command experiment templates, their encoding and state.json (no processes)."""
from __future__ import annotations

import json
import shlex

import pytest

from dbdict_worker.constants import EXIT_INCOMPLETE, Status
from dbdict_worker.job.cmdexp import (
    CommandError,
    CommandTemplate,
    _exit_status,
    env_name,
    read_state_json,
    state_env,
    write_state_json,
)
from dbdict_worker.errors import UsageError


def test_template_round_trips_through_the_experiment_column():
    t = CommandTemplate.from_text("python 'my train.py' --lr {lr} --out {workdir}")
    assert t.argv == ("python", "my train.py", "--lr", "{lr}", "--out", "{workdir}")
    text = t.encode()
    assert text == 'cmd:["python","my train.py","--lr","{lr}","--out","{workdir}"]'
    assert CommandTemplate.decode(text) == t
    s = CommandTemplate.from_text("echo {lr} | tee out", shell=True)
    assert CommandTemplate.decode(s.encode()) == s and s.shell


def test_render_fills_each_argument_without_a_shell():
    t = CommandTemplate.from_text("prog --lr={lr:.1e} --name {name} {model.size} {workdir}")
    argv = t.render({"lr": 0.001, "name": "a b; rm -rf ~", "model.size": 3},
                    {"workdir": "/w d"})
    assert argv == ["prog", "--lr=1.0e-03", "--name", "a b; rm -rf ~", "3", "/w d"]


def test_shell_template_quotes_every_value():
    t = CommandTemplate.from_text("echo {name} > out.txt", shell=True)
    argv = t.render({"name": "$(touch pwned) `id`; 'q'"}, {})
    assert argv[:2] == ["/bin/sh", "-c"]
    assert shlex.split(argv[2]) == ["echo", "$(touch pwned) `id`; 'q'", ">", "out.txt"]


def test_placeholders_never_reach_attributes():
    t = CommandTemplate.from_text("prog {lr.__class__}")
    with pytest.raises(UsageError, match="not a parameter"):
        t.check([{"lr": 0.1}])
    with pytest.raises(KeyError):
        t.render({"lr": 0.1}, {})


@pytest.mark.parametrize("template, params, match", [
    ("prog {missing}", {"lr": 1}, "not a parameter"),
    ("prog {lr:d}", {"lr": 0.5}, "cannot format"),
    ("prog {}", {"lr": 1}, "named placeholders"),
    ("prog {0}", {"lr": 1}, "named placeholders"),
    ("prog {lr", {"lr": 1}, "literal braces"),
    ("prog {workdir}", {"workdir": "x"}, "clashes"),
])
def test_bad_templates_are_refused_at_enqueue(template, params, match):
    with pytest.raises(UsageError, match=match):
        CommandTemplate.from_text(template).check([params])


def test_unbalanced_quotes_and_empty_commands_are_usage_errors():
    with pytest.raises(UsageError):
        CommandTemplate.from_text("prog 'unterminated")
    with pytest.raises(UsageError):
        CommandTemplate.from_text("   ")


@pytest.mark.parametrize("text", ["cmd:", "cmd:[]", "cmd:[1]", 'cmd:"x"', "shell:[]",
                                  "shell:"])
def test_malformed_columns_are_errors(text):
    with pytest.raises(CommandError):
        CommandTemplate.decode(text)


def test_env_names_and_values():
    assert env_name("lr") == "DBDICT_P_LR"
    assert env_name("model.n_hidden") == "DBDICT_P_MODEL__N_HIDDEN"
    assert env_name("a-b c") == "DBDICT_P_A_B_C"
    assert env_name("dbdict.id") == "DBDICT_JOB_ID"
    assert env_name("dbdict") == "DBDICT_P_DBDICT"
    assert env_name("dbdictx.a") == "DBDICT_P_DBDICTX__A"
    env = state_env({"lr": 0.1, "name": "adam", "flag": True, "none": None, "xs": (1, 2)})
    assert env == {"DBDICT_P_LR": "0.1", "DBDICT_P_NAME": "adam", "DBDICT_P_FLAG": "true",
                   "DBDICT_P_NONE": "null", "DBDICT_P_XS": "[1, 2]"}


def test_exit_status_of_the_program():
    assert _exit_status(0, False) == (Status.DONE, None)
    assert _exit_status(EXIT_INCOMPLETE, False) == (Status.START, None)
    assert _exit_status(3, False) == (Status.ERR_RUN, "command exited with code 3")
    assert _exit_status(-9, False) == (Status.ERR_RUN, "command killed by signal 9 (SIGKILL)")
    assert _exit_status(-15, True) == (Status.START,
                                       "stopped: command killed by signal 15 (SIGTERM)")


def test_state_json_round_trip_keeps_types_and_merges(tmp_path):
    path = tmp_path / "state.json"
    before = {"shape": (3, 4), "lr": 0.1, "dbdict.id": 5}
    write_state_json(path, before)
    data = json.loads(path.read_text())
    assert data["shape"] == [3, 4] and data["dbdict.id"] == 5
    data["result"] = 0.93
    data["model"] = {"depth": 2}
    data["dbdict.id"] = 999
    del data["lr"]
    path.write_text(json.dumps(data))
    after = read_state_json(path, {"shape": (3, 4), "lr": 0.1})
    assert after == {"shape": (3, 4), "lr": 0.1, "result": 0.93, "model.depth": 2}
    assert isinstance(after["shape"], tuple), "an unchanged value keeps its type"


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"bad": [{"x": 1}]}', "'bad'"),
    ('{"a": 1, "a.b": 2}', "conflict"),
])
def test_bad_state_json_is_a_clear_error(tmp_path, content, match):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=match):
        read_state_json(path, {})
