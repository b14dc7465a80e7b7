"""Rough edges of the commands (issue 11, item 7), each through the real command: options
that name their variables and do what they say, standard JSON, quiet broken pipes, one-line
errors for bad URLs, damaged schemas and missing views."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import time

import click
import pytest
import sqlalchemy as sa

from dbdict_worker.db.schema import workers
from dbdict_worker.store import Store
from tests.acceptance.conftest import BIN


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def strict_json(text: str):
    """Parse as JSON.parse and jq do: bare NaN/Infinity are errors."""
    return json.loads(text, parse_constant=_refuse_constant)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "[SQL:" not in proc.stderr
    return lines[0]


# --- bench and --help ------------------------------------------------------------------------


def test_bench_takes_the_database_from_DBDICT_DB(pg_cli, empty_pg_url):
    # An empty database: the bench fails at once, naming it, so it did use DBDICT_DB (no
    # figure is measured).
    proc = pg_cli("dbdict-worker", "bench", "--quick", ok=False,
                  env={"DBDICT_DB": empty_pg_url})
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "no dbdict schema" in line and sa.make_url(empty_pg_url).database in line
    # Neither --db nor DBDICT_DB: a usage error that names both.
    proc = pg_cli("dbdict-worker", "bench", ok=False, env={"DBDICT_DB": ""})
    assert proc.returncode == 2 and "DBDICT_DB" in proc.stderr and "--db" in proc.stderr
    assert "DBDICT_DB" in pg_cli("dbdict-worker", "bench", "--help").stdout


def test_start_help_names_the_variables_of_its_options(pg_cli):
    text = " ".join(pg_cli("dbdict-worker", "start", "--help").stdout.split())
    for var in ("DBDICT_HEARTBEAT", "DBDICT_LEASE", "DBDICT_WORKDIR_BASE", "DBDICT_DB",
                "DBDICT_EXPROOT", "DBDICT_SLOTS", "DBDICT_GRACE"):
        assert var in text, var


def _commands(group: click.Group, prefix: str):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", cmd


def test_every_option_with_a_variable_names_it_in_its_help():
    from dbdict_worker.cli import enqueue, main, worker

    roots = [("dbdict", main.main), ("dbdict-worker", worker.main),
             ("dbdict-enqueue", enqueue.main)]
    missing = []
    for prog, root in roots:
        commands = _commands(root, prog) if isinstance(root, click.Group) else [(prog, root)]
        for name, cmd in commands:
            for param in cmd.params:
                envvars = param.envvar if isinstance(param.envvar, (list, tuple)) \
                    else [param.envvar] if param.envvar else []
                help_text = getattr(param, "help", None) or ""
                for var in envvars:
                    if var not in help_text and not getattr(param, "show_envvar", False):
                        missing.append(f"{name} {param.opts[0]} ({var})")
    assert not missing, missing


def test_start_refuses_a_lease_under_three_heartbeats(pg_cli):
    proc = pg_cli("dbdict-worker", "start", "--heartbeat", "30", "--lease", "31", ok=False)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "3 heartbeats" in line and "--lease 90" in line
    # The variables count too (DBDICT_LEASE under 3 x the default heartbeat).
    proc = pg_cli("dbdict-worker", "start", ok=False, env={"DBDICT_LEASE": "20"})
    assert proc.returncode == 2 and "--lease 30" in proc.stderr


# --- --table where it means something -----------------------------------------------------------


def test_table_options_that_did_nothing_are_gone_and_show_checks_the_table(cli, db_url):
    with Store.open(db_url) as store:
        (job_id,) = store.enqueue("x.exp", [{"a": 1}]).created  # in table 'default'
        store.enqueue("x.exp", [{"a": 2}], table="other")
    for args in (["db", "upgrade", "--table", "other"], ["db", "upgrade", "-t", "other"],
                 ["view", "drop", "v", "-t", "other"]):
        proc = cli("dbdict", *args, ok=False)
        assert proc.returncode == 2 and "No such option" in proc.stderr, args
    proc = cli("dbdict-worker", "drain", "--all", "--table", "other", ok=False)
    assert proc.returncode == 2 and "No such option" in proc.stderr
    assert "up to date" in cli("dbdict", "db", "upgrade").stdout
    proc = cli("dbdict", "show", str(job_id), "-t", "other", ok=False)
    assert proc.returncode == 1
    assert one_line_error(proc) == f"error: job {job_id} is in table 'default', not 'other'"
    # Through DBDICT_TABLE as well; and in its own table it is shown.
    proc = cli("dbdict", "show", str(job_id), ok=False, env={"DBDICT_TABLE": "other"})
    assert proc.returncode == 1 and "not 'other'" in proc.stderr
    assert "a = 1" in cli("dbdict", "show", str(job_id), "-t", "default").stdout
    assert "a = 1" in cli("dbdict", "show", str(job_id)).stdout


# --- JSON --------------------------------------------------------------------------------------


NON_FINITE = {"lo": float("-inf"), "hi": float("inf"), "bad": float("nan"),
              "curve": [1.5, float("nan")], "ok": 2.5}


def test_json_output_is_standard_json_with_nan_as_strings(cli, db_url):
    with Store.open(db_url) as store:
        (job_id,) = store.enqueue("x.exp", [NON_FINITE]).created
    outputs = {
        "export": cli("dbdict", "export", "--format", "json").stdout,
        "list": cli("dbdict", "list", "--json").stdout,
        "show": cli("dbdict", "show", str(job_id), "--json").stdout,
    }
    for name, text in outputs.items():
        data = strict_json(text)
        if name == "export":
            job = data[0]  # flat objects
        else:
            job = (data if name == "show" else data[0])["state"]
        assert (job["lo"], job["hi"], job["bad"]) == ("-Infinity", "Infinity", "NaN"), name
        assert job["curve"] == [1.5, "NaN"] and job["ok"] == 2.5, name
        # The strings read back as the numbers in Python (and Number() in JavaScript).
        assert float(job["lo"]) == float("-inf") and float(job["bad"]) != float(job["bad"])
    nulls = strict_json(cli("dbdict", "export", "--format", "json", "--json-nan", "null").stdout)
    assert (nulls[0]["lo"], nulls[0]["bad"], nulls[0]["curve"]) == (None, None, [1.5, None])
    raw = cli("dbdict", "export", "--format", "json", "--json-nan", "raw").stdout
    with pytest.raises(ValueError):
        strict_json(raw)
    assert json.loads(raw)[0]["lo"] == float("-inf")  # the old form, for Python readers
    for tool, argv in (("jq", ["jq", "-e", ".[0].bad == \"NaN\""]),
                       ("node", ["node", "-e", "const d = JSON.parse(require('fs')"
                                 ".readFileSync(0, 'utf8')); process.exit(Number(d[0].lo) "
                                 "=== -Infinity ? 0 : 1)"])):
        if shutil.which(tool):
            done = subprocess.run(argv, input=outputs["export"], capture_output=True, text=True)
            assert done.returncode == 0, (tool, done.stderr)


# --- a reader that goes away ------------------------------------------------------------------


@pytest.mark.parametrize("args", [["export"], ["export", "--format", "json"],
                                  ["export", "--format", "table"], ["list"],
                                  ["list", "--json"]])
def test_a_closed_pipe_ends_the_command_quietly(pg_url, tmp_path, args):
    with Store.open(pg_url) as store:
        store.enqueue("x.exp", [{"i": i, "text": "x" * 50} for i in range(3000)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
    proc = subprocess.Popen([str(BIN / "dbdict"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**env, "DBDICT_DB": pg_url},
                            cwd=tmp_path)
    assert proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    # 128 + SIGPIPE, as `cat` would give under pipefail; 0 where Python's own buffered
    # writer drops the rest of one big write without an error (list --json).
    assert proc.wait(60) in (141, 0), err
    assert err == ""


# --- one-line errors --------------------------------------------------------------------------


def test_an_invalid_connection_option_fails_at_once(pg_cli, pg_url):
    bad = pg_url + "?sslmode=bogus"
    t = time.monotonic()
    proc = pg_cli("dbdict", "list", ok=False, env={"DBDICT_DB": bad,
                                                   "DBDICT_RETRY_SECONDS": "15"})
    assert time.monotonic() - t < 10  # not 15 s of retries
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert 'invalid sslmode value: "bogus"' in line and "retries" not in line


def test_a_damaged_schema_is_one_line(cli, db_url):
    with Store.open(db_url) as store:
        store.enqueue("x.exp", [{"a": 1}])
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # the version table still says current
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN run_info")
    engine.dispose()
    for args in (["list"], ["export", "--format", "json"], ["show", "1"]):
        proc = cli("dbdict", *args, ok=False)
        assert proc.returncode == 1, args
        line = one_line_error(proc)
        assert "damaged dbdict schema" in line and "run_info" in line, args


def test_a_dropped_jobs_table_is_one_line(cli, db_url):
    Store.open(db_url).close()
    if db_url.startswith("sqlite"):
        with sqlite3.connect(sa.make_url(db_url).database) as conn:
            conn.execute("PRAGMA foreign_keys = OFF")
            conn.execute("DROP TABLE jobs")
    else:
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE jobs CASCADE")
        engine.dispose()
    for cmd, args in (("dbdict", ["list"]), ("dbdict", ["export"]),
                      ("dbdict-worker", ["status"])):
        proc = cli(cmd, *args, ok=False)
        assert proc.returncode == 1, args
        assert "damaged dbdict schema" in one_line_error(proc), args


def test_dropping_a_view_that_is_not_there_says_so(cli, db_url):
    Store.open(db_url).close()  # the schema (SQLite: the file) exists already
    proc = cli("dbdict", "view", "drop", "nosuch", ok=False)
    assert proc.returncode == 1
    assert one_line_error(proc) == "error: no view 'nosuch' to drop (views: none)"
    cli("dbdict", "view", "create", "results")
    assert "dropped view 'results'" in cli("dbdict", "view", "drop", "results").stdout
    assert cli("dbdict", "view", "drop", "results", ok=False).returncode == 1


# --- lost workers (the real kill -9 is in test_worker_edges.py; this one on both backends) ----


def test_status_and_drain_tell_lost_workers_apart(cli, db_url):
    with Store.open(db_url) as store:
        store.register_worker("w-gone", "node3", 101, 1, None)
        store.register_worker("w-here", "node7", 202, 1, None)
        with store.engine.begin() as conn:  # its last heartbeat, 15 minutes ago
            conn.execute(sa.update(workers).where(workers.c.id == "w-gone").values(
                heartbeat_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=15)))
    rows = {w["id"]: w for w in json.loads(
        cli("dbdict-worker", "status", "--json").stdout)["workers"]}
    assert (rows["w-gone"]["state"], rows["w-here"]["state"]) == ("lost", "running")
    assert "lost" in cli("dbdict-worker", "status").stdout
    # A lease longer than its silence: not lost.
    rows = json.loads(cli("dbdict-worker", "status", "--json", "--lease", "3600").stdout)
    assert {w["state"] for w in rows["workers"]} == {"running"}
    out = cli("dbdict-worker", "drain", "--all").stdout.strip()
    assert out == ("draining 1 worker(s): w-here; 1 lost worker(s) skipped (no heartbeat for "
                   "over 60s): w-gone")
    out = cli("dbdict-worker", "drain", "--worker", "w-gone").stdout.strip()
    assert out == ("no running worker matched; 1 lost worker(s) skipped (no heartbeat for "
                   "over 60s): w-gone")
