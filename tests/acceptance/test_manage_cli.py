"""The ``dbdict`` management commands run as a user runs them (README "Managing jobs"): the view in
psql, exports, show/status/cancel/requeue/delete/set-priority, ``requeue --stale``, the table
named in the URL, and ``dbdict run --force`` over a workdir left RUNNING.

Each command runs in a subprocess (the ``cli`` fixture: PostgreSQL and SQLite) and its effect
is read back through ``dbdict list --json`` or ``dbdict show --json``, as a script would."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess

import pytest

from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.errors import LostOwnership
from dbdict_worker.records import RESERVED_KEYS
from dbdict_worker.state import read_conf
from dbdict_worker.store import Store
from tests.acceptance.test_dbdict_run import EX, dbdict, start, wait_for_step
from tests.support.waiting import wait_for
from tests.support.needs import psql

EVIL = 'a"; DROP TABLE jobs; --'
SWEEP = ["pkg.exp", "lr={{0.1,0.01}}", "n={{1,2}}"]


def enqueue(cli, *args: str) -> list[int]:
    out = cli.json("dbdict-enqueue", *args, "--json")
    assert out["skipped"] == 0
    return out["created"]


def jobs_by_id(cli, *args: str) -> dict[int, dict]:
    return {j["id"]: j for j in cli.json("dbdict", "list", "--json", *args)}


def ids_where(jobs: dict[int, dict], **params) -> list[int]:
    return sorted(i for i, j in jobs.items()
                  if all(j["state"][k] == v for k, v in params.items()))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------------------------------------
# dbdict view create, read with psql


def test_view_create_command_then_psql_filters_numerically(pg_cli):
    ids = enqueue(pg_cli, *SWEEP, f"{EVIL}=x", "opt=adam")
    before = set(psql(pg_cli.url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    out = pg_cli("dbdict", "view", "create", "v")
    line = one_line(out.stdout)
    assert line.startswith("created view 'v' with ")
    for column in ("dbdict.id", "dbdict.status", "lr", "n", "opt", EVIL):
        assert column in line

    jobs = jobs_by_id(pg_cli)
    expected = ids_where(jobs, lr=0.1)
    assert len(expected) == 2
    quoted_evil = '"' + EVIL.replace('"', '""') + '"'
    rows = psql(pg_cli.url,
                f'SELECT "dbdict.id", n, {quoted_evil}, pg_typeof(lr), pg_typeof(n), '
                f'"dbdict.status" FROM v WHERE lr = 0.1 ORDER BY "dbdict.id"')
    assert rows == [f"{i}|{jobs[i]['state']['n']}|x|double precision|bigint|START"
                    for i in expected]
    # Numeric columns compare and aggregate as numbers, not text.
    assert psql(pg_cli.url, "SELECT count(*), sum(n) FROM v WHERE lr < 0.05 AND n >= 1") \
        == ["2|3"]
    # The hostile key became a column and nothing else: every table is there, every job too.
    after = set(psql(pg_cli.url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    assert after == before and "jobs" in after
    assert psql(pg_cli.url, "SELECT count(*) FROM jobs") == ["4"]
    assert sorted(jobs_by_id(pg_cli)) == sorted(ids)
    # Created again, the view picks up keys that appeared since.
    enqueue(pg_cli, "pkg.exp", "lr=0.5", "brand_new=7")
    assert "brand_new" in pg_cli("dbdict", "view", "create", "v").stdout
    assert psql(pg_cli.url, "SELECT pg_typeof(brand_new) FROM v WHERE brand_new = 7") \
        == ["bigint"]


# ---------------------------------------------------------------------------------------------
# dbdict export


def test_export_csv_and_json_with_where(cli, tmp_path):
    ids = enqueue(cli, *SWEEP)
    jobs = jobs_by_id(cli)
    expected = ids_where(jobs, lr=0.1)

    out = cli("dbdict", "export", "--format", "csv", "--where", "lr=0.1")
    reader = csv.DictReader(io.StringIO(out.stdout))
    rows = list(reader)
    assert reader.fieldnames == [*RESERVED_KEYS, "lr", "n"]
    assert len(rows) == 2
    assert [int(r["dbdict.id"]) for r in rows] == expected
    assert {r["lr"] for r in rows} == {"0.1"}
    assert sorted(r["n"] for r in rows) == ["1", "2"]
    assert {r["dbdict.status"] for r in rows} == {"START"}
    assert {r["dbdict.experiment"] for r in rows} == {"pkg.exp"}
    assert {r["dbdict.table"] for r in rows} == {"default"}
    assert {r["dbdict.error"] for r in rows} == {""}

    data = json.loads(cli("dbdict", "export", "--format", "json", "--where", "lr=0.1").stdout)
    assert [d["dbdict.id"] for d in data] == expected
    assert all(type(d["lr"]) is float and d["lr"] == 0.1 for d in data)
    assert sorted(d["n"] for d in data) == [1, 2] and all(type(d["n"]) is int for d in data)
    assert all(d["dbdict.status"] == "START" and d["dbdict.error"] is None for d in data)

    # --output writes the file and says how many jobs went there; an empty match is valid.
    note = cli("dbdict", "export", "--format", "csv", "-o", "all.csv")
    assert note.stdout == "" and "wrote 4 jobs to all.csv" in note.stderr
    with open(tmp_path / "all.csv", newline="", encoding="utf-8") as f:
        assert sorted(int(r["dbdict.id"]) for r in csv.DictReader(f)) == sorted(ids)
    none = cli("dbdict", "export", "--format", "json", "--where", "lr=7")
    assert json.loads(none.stdout) == []


# ---------------------------------------------------------------------------------------------
# show, status, cancel, requeue, delete, set-priority


def test_show_and_status_by_key(cli):
    enqueue(cli, *SWEEP)
    jobs = jobs_by_id(cli)
    (first,) = ids_where(jobs, lr=0.1, n=1)

    text = cli("dbdict", "show", str(first)).stdout.splitlines()
    assert "lr = 0.1" in text and "n = 1" in text
    assert f"dbdict.id = {first}" in text and "dbdict.status = 'START'" in text
    assert "dbdict.experiment = 'pkg.exp'" in text and "dbdict.table = 'default'" in text

    rec = cli.json("dbdict", "show", str(first), "--json")
    assert {k: rec[k] for k in ("id", "table", "experiment", "status", "priority",
                                "attempts", "error")} == {
        "id": first, "table": "default", "experiment": "pkg.exp", "status": "START",
        "priority": 1.0, "attempts": 0, "error": None}
    assert rec["state"]["lr"] == 0.1 and rec["state"]["n"] == 1
    assert rec["state"]["dbdict.id"] == first and rec["events"] == []
    assert rec["state"] == jobs[first]["state"], "show --json and list --json agree"

    missing = cli("dbdict", "show", "999999", ok=False)
    assert missing.returncode == 1 and "no job 999999" in one_line(missing.stderr)

    cli("dbdict", "cancel", str(first))
    assert cli.json("dbdict", "status", "--by", "n", "--json") == {
        "1": {"CANCELED": 1, "START": 1}, "2": {"START": 2}}
    table = cli("dbdict", "status", "--by", "n").stdout.splitlines()
    assert table[0].split() == ["n", "CANCELED", "START", "total"]
    assert [r.split() for r in table[1:]] == [["1", "1", "1", "2"], ["2", "0", "2", "2"]]
    assert cli.json("dbdict", "status", "--by", "lr", "--json", "--where", "n=2") == {
        "0.01": {"START": 1}, "0.1": {"START": 1}}


def test_cancel_and_requeue_on_ids_and_selections(cli):
    enqueue(cli, *SWEEP)
    jobs = jobs_by_id(cli)
    a, b = ids_where(jobs, lr=0.1)
    c, d = ids_where(jobs, lr=0.01)

    assert one_line(cli("dbdict", "cancel", str(a)).stdout) == f"canceled 1 job(s): {a}"
    # A selection skips what is already cancelled.
    assert one_line(cli("dbdict", "cancel", "--where", "lr=0.1").stdout) \
        == f"canceled 1 job(s): {b}"
    after = jobs_by_id(cli)
    assert {i: j["status"] for i, j in after.items()} == {
        a: "CANCELED", b: "CANCELED", c: "START", d: "START"}

    # A queued job is not requeued; a cancelled one is, with the priority asked for.
    assert one_line(cli("dbdict", "requeue", str(c)).stdout) == "requeued 0 job(s)"
    assert one_line(cli("dbdict", "requeue", "--status", "CANCELED", "--priority", "3")
                    .stdout) == f"requeued 2 job(s): {a} {b}"
    after = jobs_by_id(cli)
    assert {i: (j["status"], j["priority"]) for i, j in after.items()} == {
        a: ("START", 3.0), b: ("START", 3.0), c: ("START", 1.0), d: ("START", 1.0)}
    history = cli.json("dbdict", "show", str(a), "--json")["events"]
    assert [e["kind"] for e in history] == ["canceled", "requeued"]

    # No selection at all is a usage error that changes nothing.
    refused = cli("dbdict", "cancel", ok=False)
    assert refused.returncode == 2 and "select jobs" in one_line(refused.stderr)
    assert {j["status"] for j in jobs_by_id(cli).values()} == {"START"}


def test_set_priority_and_delete_on_ids_and_selections(cli):
    enqueue(cli, *SWEEP)
    jobs = jobs_by_id(cli)
    a, b = ids_where(jobs, lr=0.1)
    c, d = ids_where(jobs, lr=0.01)

    assert one_line(cli("dbdict", "set-priority", "5", "--where", "lr=0.01").stdout) \
        == f"set priority 5 on 2 job(s): {c} {d}"
    assert one_line(cli("dbdict", "set-priority", "0.5", str(a)).stdout) \
        == f"set priority 0.5 on 1 job(s): {a}"
    after = jobs_by_id(cli)
    assert {i: j["priority"] for i, j in after.items()} == {a: 0.5, b: 1.0, c: 5.0, d: 5.0}

    assert one_line(cli("dbdict", "delete", "--where", "n=2").stdout) \
        == f"deleted 2 job(s): {b} {d}"
    assert one_line(cli("dbdict", "delete", str(a)).stdout) == f"deleted 1 job(s): {a}"
    left = cli.json("dbdict", "list", "--json")
    assert [j["id"] for j in left] == [c]
    assert left[0]["priority"] == 5.0 and left[0]["state"]["n"] == 1
    # Deleted means gone, history included.
    gone = cli("dbdict", "show", str(b), ok=False)
    assert gone.returncode == 1 and f"no job {b}" in gone.stderr


# ---------------------------------------------------------------------------------------------
# dbdict requeue --stale on a job a worker booked


def test_requeue_stale_command_rescues_a_booked_job(cli):
    (job_id, other) = enqueue(cli, "pkg.exp", "x={{1,2}}")
    store = Store.open(cli.url, retry_seconds=5)
    try:
        (booking,) = store.book("w-lost", "node7", n=1)
        assert booking.job.id == job_id

        fresh = cli("dbdict", "requeue", "--stale", "--lease", "3600")
        assert one_line(fresh.stdout) == "requeued 0 stale job(s)"
        assert jobs_by_id(cli)[job_id]["status"] == "RUNNING"

        out = cli("dbdict", "requeue", "--stale", "--lease", "0")
        assert one_line(out.stdout) == f"requeued 1 stale job(s): {job_id}"
        jobs = jobs_by_id(cli)
        assert jobs[job_id]["status"] == "START"
        assert jobs[job_id]["priority"] == RESTART_PRIORITY
        assert jobs[other]["status"] == "START" and jobs[other]["priority"] == 1.0
        events = cli.json("dbdict", "show", str(job_id), "--json")["events"]
        assert [e["kind"] for e in events] == ["booked", "lost"]
        lost = events[-1]
        assert lost["worker"] == "dbdict requeue --stale"
        assert "w-lost" in lost["detail"] and "node7" in lost["detail"]
        assert lost["detail"].endswith("now START")

        # The rescued job goes first, and its former owner can no longer finish it.
        (again,) = store.book("w-new", "node8", n=1)
        assert again.job.id == job_id and again.token.attempt == 2
        with pytest.raises(LostOwnership):
            store.finish(booking.token, Status.DONE, state={"x": 1, "result": "stale"})
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# The table named in the URL


def test_table_named_in_the_url(pg_cli):
    url = pg_cli.url.replace("+psycopg2", "")  # as a user writes it
    out = pg_cli.json("dbdict-enqueue", "--db", url + "/mytab", "pkg.exp", "x={{1,2}}",
                      "--json")
    assert len(out["created"]) == 2
    enqueue(pg_cli, "pkg.exp", "x=3", "--table", "other")
    everything = pg_cli.json("dbdict", "list", "--json")
    assert {j["id"]: j["table"] for j in everything} == {
        out["created"][0]: "mytab", out["created"][1]: "mytab",
        everything[-1]["id"]: "other"}
    # The URL's table also restricts what the other commands read.
    in_mytab = pg_cli.json("dbdict", "list", "--json", "--db", url + "/mytab")
    assert [j["id"] for j in in_mytab] == out["created"]
    assert pg_cli.json("dbdict", "status", "--json", "--db", url + "/mytab") == {
        "mytab": {"START": 2}}
    assert pg_cli.json("dbdict", "status", "--json") == {
        "mytab": {"START": 2}, "other": {"START": 1}}


# ---------------------------------------------------------------------------------------------
# dbdict run over a workdir left RUNNING


def _kill_group_and_parent(parent: subprocess.Popen, child_pid: int) -> None:
    """Freeze both, then kill both: what a crashed machine leaves behind (nobody gets to
    record an outcome in current.conf)."""
    parent.send_signal(signal.SIGSTOP)
    os.killpg(child_pid, signal.SIGSTOP)
    os.killpg(child_pid, signal.SIGKILL)
    parent.kill()
    parent.communicate(timeout=30)

    def gone() -> bool:
        try:
            with open(f"/proc/{child_pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    wait_for(gone, timeout=10, what=f"the experiment (pid {child_pid}) to die")


def test_run_refuses_a_running_workdir_unless_forced(tmp_path):
    args = ["run", EX + "loop", "total=300", "sleep=0.005", "--workdir", "w",
            "--save-interval", "0"]
    proc = start(tmp_path, *args)
    wait_for_step(tmp_path, "w", 5, proc)
    wd = tmp_path / "w"
    child_pid = int((wd / "starts.log").read_text().split()[-1])
    _kill_group_and_parent(proc, child_pid)
    left = read_conf(wd / "current.conf")
    assert left["dbdict.status"] == "RUNNING" and 5 <= left["step"] < 300
    before = (wd / "current.conf").read_text()

    refused = dbdict(tmp_path, *args)
    assert refused.returncode == 1, refused.stderr
    line = one_line(refused.stderr)
    assert "RUNNING" in line and "--force" in line
    assert (wd / "current.conf").read_text() == before, "a refused run touches nothing"
    assert len((wd / "starts.log").read_text().splitlines()) == 1, "and runs nothing"

    forced = dbdict(tmp_path, *args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "COMPLETE" in forced.stderr
    final = read_conf(wd / "current.conf")
    assert final["dbdict.status"] == "DONE" and final["step"] == 300
    # It resumed from the state current.conf held, and ends where an uninterrupted run does.
    assert final["result"] == final["acc"] == sum(range(1, 301))
    starts = (wd / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and starts[1].startswith(f"start at step {left['step']} ")
