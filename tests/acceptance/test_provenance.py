"""Provenance through the real commands: a job enqueued from a git checkout and run by a real
worker shows its code version (commit, dirty flag, diff hash), the user, the command line, and
the attempt's host, Python and dbdict versions in ``dbdict show``, ``show --json``, exports
and the view; ``dbdict diff`` shows what differs between two jobs."""
from __future__ import annotations

import csv
import getpass
import hashlib
import io
import json
import platform
import shutil
import socket
import subprocess

import pytest

from dbdict_worker.provenance import dbdict_version
from tests.acceptance.conftest import Cli

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

EXPERIMENT = '''\
def experiment(state, channel):
    state.y = state.x * 2
'''


def git(repo, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True,
                          capture_output=True).stdout


@pytest.fixture
def repo(tmp_path):
    """A checkout with an experiment module, committed."""
    path = tmp_path / "proj"
    path.mkdir()
    (path / "prov_exp.py").write_text(EXPERIMENT)
    (path / "notes.txt").write_text("v1\n")
    git(path, "init", "-q")
    git(path, "-c", "user.email=t@example.org", "-c", "user.name=t", "add", ".")
    git(path, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "-m", "1")
    return path


def test_dirty_checkout_provenance_in_show_json_export_and_view(db_url, repo, workers):
    cli = Cli(db_url, repo)  # enqueue from inside the checkout
    env = {"PYTHONPATH": str(repo)}
    head = git(repo, "rev-parse", "HEAD").decode().strip()
    (repo / "notes.txt").write_text("v2\n")  # a tracked file changed: dirty
    cli("dbdict-enqueue", "prov_exp.experiment", "x=1", env=env)
    first_hash = hashlib.sha256(git(repo, "diff", "--binary", "HEAD")).hexdigest()
    (repo / "notes.txt").write_text("v3\n")  # another diff: another hash
    cli("dbdict-enqueue", "prov_exp.experiment", "x=2", env=env)
    workers(db_url, "w", "--until-empty", env=env).wait()

    shown = cli("dbdict", "show", "1").stdout
    assert "dbdict.status = 'DONE'" in shown
    block = shown[shown.index("provenance"):]
    for line in (f"dbdict.user = {getpass.getuser()}",
                 f"dbdict.enqueue_host = {socket.gethostname()}",
                 "dbdict.command = dbdict-enqueue prov_exp.experiment x=1",
                 f"dbdict.cwd = {repo}", f"dbdict.git_repo = {repo}",
                 f"dbdict.git_commit = {head}", "dbdict.git_dirty = True",
                 f"dbdict.git_diff_hash = {first_hash}",
                 f"dbdict.python = {platform.python_version()}",
                 f"dbdict.version = {dbdict_version()}"):
        assert f"  {line}\n" in block, (line, shown)
    assert f"dbdict.host = '{socket.gethostname()}'" in shown

    rec = cli.json("dbdict", "show", "1", "--json")["state"]
    assert rec["y"] == 2 and rec["dbdict.git_commit"] == head and rec["dbdict.git_dirty"] is True
    assert json.loads(rec["dbdict.command"]) == ["dbdict-enqueue", "prov_exp.experiment", "x=1"]
    assert rec["dbdict.python"] == platform.python_version()

    rows = list(csv.DictReader(io.StringIO(cli("dbdict", "export").stdout)))
    assert [r["dbdict.git_dirty"] for r in rows] == ["True", "True"]
    assert rows[0]["dbdict.git_diff_hash"] == first_hash
    assert rows[1]["dbdict.git_diff_hash"] not in ("", first_hash)
    assert {r["dbdict.version"] for r in rows} == {dbdict_version()}
    listed = cli.json("dbdict", "list", "--json")
    assert [j["state"]["dbdict.user"] for j in listed] == [getpass.getuser()] * 2

    cli("dbdict", "view", "create", "results")
    import sqlalchemy as sa
    from dbdict_worker.db.connect import create_engine, parse_url

    engine = create_engine(parse_url(db_url))
    try:
        with engine.connect() as conn:
            got = conn.execute(sa.text(
                'SELECT "dbdict.git_commit", "dbdict.python", y FROM results '
                'ORDER BY "dbdict.id"')).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in got] == [(head, platform.python_version(), 2),
                                       (head, platform.python_version(), 4)]

    # dbdict diff: the parameter, the result, the diff hash and the command differ.
    diff = cli("dbdict", "diff", "1", "2").stdout.splitlines()
    assert diff[0].split() == ["key", "job", "1", "job", "2"]
    keys = [line.split()[0] for line in diff[1:]]
    assert keys == ["x", "y", "dbdict.command", "dbdict.git_diff_hash"]
    assert diff[1].split() == ["x", "1", "2"]
    as_json = cli.json("dbdict", "diff", "1", "2", "--json")
    assert as_json["ids"] == [1, 2]
    assert as_json["differences"][0] == {"key": "x", "values": [1, 2], "present": [True, True]}


def test_clean_checkout_is_not_dirty(pg_url, repo):
    cli = Cli(pg_url, repo)
    cli("dbdict-enqueue", "prov_exp.experiment", "x=1", env={"PYTHONPATH": str(repo)})
    (repo / "untracked.csv").write_text("outputs do not make it dirty\n")
    cli("dbdict-enqueue", "prov_exp.experiment", "x=2", env={"PYTHONPATH": str(repo)})
    for job_id in ("1", "2"):
        state = cli.json("dbdict", "show", job_id, "--json")["state"]
        assert state["dbdict.git_dirty"] is False and state["dbdict.git_diff_hash"] is None
        assert state["dbdict.git_commit"] == git(repo, "rev-parse", "HEAD").decode().strip()
    # Jobs that differ only by their parameter (and so their command line).
    lines = [line.split() for line in cli("dbdict", "diff", "1", "2").stdout.splitlines()]
    assert lines[1:] == [["x", "1", "2"], ["dbdict.command", *"dbdict-enqueue prov_exp.experiment "
                         "x=1 dbdict-enqueue prov_exp.experiment x=2".split()]]


def test_outside_any_repository_enqueue_works_without_code_version(db_url, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "plain_exp.py").write_text(EXPERIMENT)
    cli = Cli(db_url, plain)
    cli("dbdict-enqueue", "plain_exp.experiment", "x=1", env={"PYTHONPATH": str(plain)})
    cli("dbdict-enqueue", "--cmd", "true {x}", "x=2", "--no-provenance")
    one = cli.json("dbdict", "show", "1", "--json")["state"]
    assert one["dbdict.user"] == getpass.getuser() and one["dbdict.cwd"] == str(plain)
    assert [one[f"dbdict.git_{k}"] for k in ("repo", "commit", "dirty", "diff_hash")] == \
        [None] * 4
    two = cli.json("dbdict", "show", "2", "--json")["state"]
    assert two["dbdict.user"] is None and two["dbdict.command"] is None  # --no-provenance
    shown = cli("dbdict", "show", "2").stdout
    assert "provenance" not in shown  # nothing recorded, no block
    # A missing key in one job: "(absent)".
    lines = cli("dbdict", "diff", "1", "2").stdout.splitlines()
    assert any(line.split()[:3] == ["dbdict.user", getpass.getuser(), "(absent)"]
               for line in lines), lines
