"""dbdict-enqueue as a user runs it (README "Parameters")."""
from __future__ import annotations

import json
import multiprocessing as mp
import subprocess

from tests.acceptance.conftest import BIN

EXECO_TOML = '''
"param 1" = ["a", "b"]

["param 2".1]
"param 1 1" = ["x", "y"]
"param 1 2" = [0.0, 1.0]

["param 2".2]
"param 2 1" = [-10, 10]
'''

EXECO_12 = sorted(sorted(d.items()) for d in [
    {"param 1": p1, "param 2": 1, "param 1 1": x, "param 1 2": f}
    for p1 in "ab" for x in "xy" for f in (0.0, 1.0)
] + [{"param 1": p1, "param 2": 2, "param 2 1": v} for p1 in "ab" for v in (-10, 10)])


def test_sweep_dedupe_and_force(cli):
    args = ["dbdict-enqueue", "pkg.exp", "lr={{0.1,0.01}}", "n={{1,2,3}}", "--json"]
    first = cli.json(*args)
    assert len(first["created"]) == 6 and first["skipped"] == 0
    assert cli.json(*args) == {"created": [], "skipped": 6}
    forced = cli.json(*args, "--force")
    assert len(forced["created"]) == 6 and forced["skipped"] == 0
    jobs = cli.json("dbdict", "list", "--json")
    assert len(jobs) == 12
    assert {(j["state"]["lr"], j["state"]["n"]) for j in jobs} == {
        (lr, n) for lr in (0.1, 0.01) for n in (1, 2, 3)}
    assert {j["status"] for j in jobs} == {"START"}
    assert jobs[0]["state"]["dbdict.experiment"] == "pkg.exp"


def test_sweep_file_reproduces_execos_example(cli, tmp_path):
    (tmp_path / "grid.toml").write_text(EXECO_TOML)
    out = cli.json("dbdict-enqueue", "pkg.exp", "--sweep", "grid.toml", "--json")
    assert len(out["created"]) == 12
    jobs = cli.json("dbdict", "list", "--json")
    got = sorted(sorted((k, v) for k, v in j["state"].items() if not k.startswith("dbdict."))
                 for j in jobs)
    assert got == EXECO_12
    assert all(type(dict(s)["param 2"]) is int for s in got)


def test_conf_files_repeat_and_priority(cli, tmp_path):
    (tmp_path / "base.conf").write_text("# defaults\nlr = 0.5\nmodel.n_hidden = 100\n")
    out = cli.json("dbdict-enqueue", "pkg.exp", "base.conf", "lr=0.1", "--repeat", "2",
                   "--priority", "3", "--json")
    assert len(out["created"]) == 2
    jobs = cli.json("dbdict", "list", "--json")
    assert {j["state"]["lr"] for j in jobs} == {0.1}
    assert {j["state"]["model.n_hidden"] for j in jobs} == {100}
    assert {j["priority"] for j in jobs} == {3.0}
    assert sorted(j["state"]["dbdict.replica"] for j in jobs) == [0, 1]


def test_dry_run_writes_nothing(cli):
    proc = cli("dbdict-enqueue", "pkg.exp", "a={{1,2}}", "--dry-run")
    assert proc.stdout.splitlines() == ["pkg.exp a=1", "pkg.exp a=2"]
    assert cli.json("dbdict", "list", "--json") == []


def _enqueue_100(url: str, out) -> None:
    proc = subprocess.run(
        [str(BIN / "dbdict-enqueue"), "pkg.exp", "i={{" + ",".join(map(str, range(100))) + "}}",
         "--json", "--db", url], capture_output=True, text=True, timeout=120)
    out.put((proc.returncode, proc.stdout, proc.stderr))


def test_two_concurrent_enqueues_of_one_sweep(pg_cli):
    pg_cli("dbdict", "status")  # schema is there
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_enqueue_100, args=(pg_cli.url, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
    assert [r[0] for r in results] == [0, 0], results
    assert len(pg_cli.json("dbdict", "list", "--json")) == 100


def test_importable_experiment_is_checked(cli):
    ok = cli.json("dbdict-enqueue", "json.dumps", "x=1", "--json")
    assert len(ok["created"]) == 1
    bad = cli("dbdict-enqueue", "json.no_such_function", "x=1", ok=False)
    assert bad.returncode == 2 and "no_such_function" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    note = cli("dbdict-enqueue", "not_installed_pkg.run", "x=1")
    assert "not importable here" in note.stderr


def test_help_answers(cli):
    for cmd in (["dbdict-enqueue"], ["dbdict"], ["dbdict", "list"], ["dbdict", "export"],
                ["dbdict", "view", "create"], ["dbdict", "requeue"], ["dbdict", "db", "upgrade"]):
        proc = cli(*cmd, "--help")
        assert "Usage:" in proc.stdout and "--" in proc.stdout


def test_json_output_is_only_json(cli):
    out = cli("dbdict-enqueue", "pkg.exp", "i={{" + ",".join(map(str, range(50))) + "}}",
              "--json")
    assert out.stdout.count("\n") == 1
    assert len(json.loads(out.stdout)["created"]) == 50
