"""dbdict-enqueue's rough edges (issue 11, item 7), through the real commands: one meaning
of DBDICT_TABLE, code found in the current directory, imports that fail on a login node,
huge sweeps counted first and streamed, empty factors, .conf files read back, bad UTF-8."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from dbdict_worker.constants import MAX_ENQUEUE_JOBS, Status
from tests.acceptance.conftest import BIN, Cli
from tests.support.waiting import wait_for

EX = "dbdict_worker.examples."


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _ids(cli: Cli, *args: str, env: dict | None = None) -> set[tuple[str, int]]:
    jobs = json.loads(cli("dbdict", "list", "--json", *args, env=env).stdout)
    return {(j["table"], j["state"]["x"]) for j in jobs}


# --- 1. DBDICT_TABLE=t1,t2: a list everywhere, and enqueue takes one ------------------------

def test_table_list_means_those_tables_for_every_reading_command(cli, store):
    for t, x in (("t1", 1), ("t2", 2), ("t3", 3)):
        store.enqueue("pkg.exp", [{"x": x}], table=t)
    both = {"DBDICT_TABLE": "t1,t2"}
    assert _ids(cli, env=both) == {("t1", 1), ("t2", 2)}
    status = json.loads(cli("dbdict", "status", "--json", env=both).stdout)
    assert set(status) == {"t1", "t2"}
    exported = cli("dbdict", "export", env=both).stdout.splitlines()
    assert len(exported) == 1 + 2  # header and the jobs of t1 and t2
    cli("dbdict", "cancel", "--all", env=both)
    statuses = {j["table"]: j["status"]
                for j in json.loads(cli("dbdict", "list", "--json").stdout)}
    assert statuses == {"t1": "CANCELED", "t2": "CANCELED", "t3": "START"}


def test_enqueue_takes_one_table(cli):
    line = _one_error_line(cli("dbdict-enqueue", "pkg.exp", "x=1", ok=False,
                               env={"DBDICT_TABLE": "t1,t2"}))
    assert line == "error: dbdict-enqueue takes one table; DBDICT_TABLE=t1,t2 names 2"
    line = _one_error_line(cli("dbdict-enqueue", "pkg.exp", "x=1", "--table", "a,b,c",
                               "--dry-run", ok=False))
    assert line == "error: dbdict-enqueue takes one table; --table=a,b,c names 3"
    assert cli.json("dbdict", "list", "--json") == []
    # A name that cannot be a directory is refused in a list as alone.
    line = _one_error_line(cli("dbdict", "status", "--table", "ok,a/b", ok=False))
    assert "invalid table name 'a/b'" in line


# --- 2. and 3. the experiment's code, checked on the machine that enqueues --------------------

def test_code_in_the_current_directory_is_found_and_the_note_says_how_workers_find_it(
        pg_url, tmp_path, workers):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "mytrain.py").write_text("def run(state, channel):\n    state.y = state.x + 1\n")
    here = Cli(pg_url, proj)
    proc = here("dbdict-enqueue", "mytrain.run", "x=41")
    assert "not importable here" not in proc.stderr
    assert ("note: mytrain is importable from the current directory only: start the workers "
            f"with PYTHONPATH={proj}") in proc.stderr
    assert "created 1 jobs" in proc.stdout
    # A typo in the function is still caught, now that the module is found.
    assert "no attribute 'rnu'" in _one_error_line(
        here("dbdict-enqueue", "mytrain.rnu", "x=1", ok=False))
    # The note's advice works: a worker started elsewhere with that PYTHONPATH runs it.
    w = workers(pg_url, "a", "--until-empty", env={"PYTHONPATH": str(proj)})
    assert w.wait() == 0, w.log()
    (job,) = json.loads(here("dbdict", "list", "--json").stdout)
    assert job["status"] == "DONE" and job["state"]["y"] == 42, w.log()


def test_an_import_that_fails_here_is_a_warning(pg_cli, tmp_path):
    (tmp_path / "needs_gpu.py").write_text("import torch_only_on_nodes\n"
                                           "def run(state, channel):\n    pass\n")
    (tmp_path / "boom.py").write_text("print('module-level output')\n"
                                      "open('boom-was-imported', 'w').close()\n"
                                      "raise RuntimeError('no CUDA device')\n")
    proc = pg_cli("dbdict-enqueue", "needs_gpu.run", "x=1", "--json")
    assert len(json.loads(proc.stdout)["created"]) == 1
    warnings = [ln for ln in proc.stderr.splitlines() if "warning:" in ln]
    assert len(warnings) == 1 and "No module named 'torch_only_on_nodes'" in warnings[0]
    proc = pg_cli("dbdict-enqueue", "boom.run", "x=2", "--json")
    assert len(json.loads(proc.stdout)["created"]) == 1  # stdout is only the JSON
    assert "RuntimeError: no CUDA device" in proc.stderr
    assert "module-level output" in proc.stderr
    # --no-check: the module is not imported at all.
    (tmp_path / "boom-was-imported").unlink()
    proc = pg_cli("dbdict-enqueue", "boom.run", "x=3", "--no-check")
    assert "warning" not in proc.stderr and "created 1 jobs" in proc.stdout
    assert not (tmp_path / "boom-was-imported").exists()
    assert {j["status"] for j in pg_cli.json("dbdict", "list", "--json")} == {"START"}


def test_a_missing_function_is_refused_unless_no_check(pg_cli):
    line = _one_error_line(pg_cli("dbdict-enqueue", "json.no_such_function", "x=1", ok=False))
    assert "no_such_function" in line
    assert pg_cli.json("dbdict", "list", "--json") == []
    pg_cli("dbdict-enqueue", "json.no_such_function", "x=1", "--no-check")
    # Only the syntax is checked then.
    assert "dotted path" in _one_error_line(
        pg_cli("dbdict-enqueue", "notdotted", "x=1", "--no-check", ok=False))
    assert len(pg_cli.json("dbdict", "list", "--json")) == 1


# --- 4. huge sweeps: counted first, refused past the limit, streamed --------------------------

THOUSAND = "{{" + ",".join(map(str, range(1000))) + "}}"


def test_a_huge_sweep_is_counted_and_refused_at_once(pg_cli, tmp_path):
    start = time.monotonic()
    for extra in ([], ["--dry-run"]):
        line = _one_error_line(pg_cli("dbdict-enqueue", "pkg.exp", f"a={THOUSAND}",
                                   f"b={THOUSAND}", f"c={THOUSAND}", *extra, ok=False))
        assert "1,000,000,000 jobs" in line and f"{MAX_ENQUEUE_JOBS:,}" in line
        assert "--yes" in line
    (tmp_path / "grid.toml").write_text(
        "\n".join(f"f{i} = [{', '.join(map(str, range(10)))}]" for i in range(10)))
    line = _one_error_line(pg_cli("dbdict-enqueue", "pkg.exp", "--sweep", "grid.toml", ok=False))
    assert "10,000,000,000 jobs" in line
    # --repeat counts too.
    line = _one_error_line(pg_cli("dbdict-enqueue", "pkg.exp", "a={{1,2}}", "--repeat",
                               str(MAX_ENQUEUE_JOBS), ok=False))
    assert f"{2 * MAX_ENQUEUE_JOBS:,} jobs" in line
    assert time.monotonic() - start < 30  # nothing was built
    assert pg_cli.json("dbdict", "list", "--json") == []


def test_yes_lets_a_huge_sweep_through_and_it_streams(tmp_path):
    """With --yes, a 10^9-job dry run starts printing at once and its memory stays small."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
    proc = subprocess.Popen(
        [str(BIN / "dbdict-enqueue"), "pkg.exp", f"a={THOUSAND}", f"b={THOUSAND}",
         f"c={THOUSAND}", "--yes", "--dry-run", "--db", f"sqlite:///{tmp_path}/q.sqlite"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path, env=env)
    try:
        assert proc.stdout.readline() == "pkg.exp a=0 b=0 c=0\n"
        for _ in range(100_000):
            line = proc.stdout.readline()
        assert line == "pkg.exp a=0 b=100 c=0\n"
        status = open(f"/proc/{proc.pid}/status").read()
        rss_kb = int(next(ln.split()[1] for ln in status.splitlines()
                          if ln.startswith("VmRSS:")))
        assert rss_kb < 200_000, f"{rss_kb} kB after 100k of 10^9 jobs"
    finally:
        proc.kill()
        proc.wait(10)


def test_store_enqueue_reads_states_a_chunk_at_a_time(store):
    from dbdict_worker.store import ENQUEUE_CHUNK

    made = [0]
    seen_at_progress: list[tuple[int, int]] = []

    def states():
        for i in range(5 * ENQUEUE_CHUNK + 7):
            made[0] += 1
            yield {"i": i}

    result = store.enqueue("pkg.exp", states(),
                           progress=lambda n: seen_at_progress.append((n, made[0])))
    assert len(result.created) == 5 * ENQUEUE_CHUNK + 7
    # Each progress call comes when at most two chunks beyond it have been read.
    assert seen_at_progress[0][0] == ENQUEUE_CHUNK
    assert all(m - n <= 2 * ENQUEUE_CHUNK for n, m in seen_at_progress)
    assert seen_at_progress[-1] == (5 * ENQUEUE_CHUNK + 7,) * 2
    assert store.counts() == {("default", Status.START): 5 * ENQUEUE_CHUNK + 7}


# --- 5. an empty factor ----------------------------------------------------------------------

@pytest.mark.parametrize("name, text, key", [
    ("grid.toml", "lr = []\nn = [1, 2]\n", "'lr'"),
    ("grid.json", '{"n": [1, 2], "opt": {}}', "'opt'"),
    ("grid.toml", "n = [1]\n[opt.adam]\nlr = []\n", "'opt.adam.lr'"),
])
def test_an_empty_factor_in_a_sweep_file_is_refused(pg_cli, tmp_path, name, text, key):
    (tmp_path / name).write_text(text)
    line = _one_error_line(pg_cli("dbdict-enqueue", "pkg.exp", "--sweep", name, ok=False))
    assert name in line and f"factor {key}" in line and "no levels" in line
    assert pg_cli.json("dbdict", "list", "--json") == []


def test_an_empty_inline_sweep_is_refused(pg_cli):
    for arg in ("lr={{}}", "lr={{ }}"):
        line = _one_error_line(pg_cli("dbdict-enqueue", "pkg.exp", arg, "n=1", ok=False))
        assert repr(arg) in line
    assert pg_cli.json("dbdict", "list", "--json") == []


# --- 6. .conf files read back from a workdir -------------------------------------------------

def test_orig_conf_and_current_conf_read_back(cli, tmp_path):
    run = cli("dbdict", "run", EX + "add", "first=1", "second=2", "--workdir", "w1")
    assert (tmp_path / "w1" / "orig.conf").read_text().count("dbdict.experiment") == 1
    # The same experiment: accepted, silently.
    proc = cli("dbdict-enqueue", EX + "add", "w1/orig.conf", "second=5", "--json")
    assert "note" not in proc.stderr, proc.stderr
    (job,) = cli.json("dbdict", "list", "--json")
    assert (job["state"]["first"], job["state"]["second"]) == (1, 5)
    # Another experiment: refused, naming the file and the key.
    line = _one_error_line(cli("dbdict-enqueue", EX + "noop", "w1/orig.conf", ok=False))
    assert "w1/orig.conf" in line and "dbdict.experiment" in line and EX + "add" in line
    # current.conf: its per-job keys are ignored, with one note.
    proc = cli("dbdict-enqueue", EX + "add", "w1/current.conf", "first=9", "--json")
    notes = [ln for ln in proc.stderr.splitlines() if "note:" in ln]
    assert len(notes) == 1 and "dbdict.status" in notes[0] and "w1/current.conf" in notes[0]
    assert len(json.loads(proc.stdout)["created"]) == 1
    # dbdict run reads orig.conf back as before.
    assert run.returncode == 0
    cli("dbdict", "run", "--file", "w1/orig.conf", "--workdir", "w2")
    assert (tmp_path / "w2" / "orig.conf").read_text() == \
        (tmp_path / "w1" / "orig.conf").read_text()


# --- 7. a .conf file that is not UTF-8 -------------------------------------------------------

def test_a_conf_file_with_invalid_utf8_names_file_and_line(pg_cli, tmp_path):
    (tmp_path / "orig.conf").write_bytes(b"a = 1\nb = 2\nc = '\xe9t\xe9'\n")
    line = _one_error_line(pg_cli("dbdict-enqueue", "pkg.exp", "orig.conf", ok=False))
    assert line.startswith("error: orig.conf:3: not valid UTF-8")
    line = _one_error_line(pg_cli("dbdict", "run", EX + "add", "--file", "orig.conf", ok=False))
    assert "orig.conf:3: not valid UTF-8" in line
    (tmp_path / "grid.toml").write_bytes(b"n = [1]\nm = ['\xff']\n")
    line = _one_error_line(pg_cli("dbdict-enqueue", "pkg.exp", "--sweep", "grid.toml", ok=False))
    assert "grid.toml:2: not valid UTF-8" in line
    assert pg_cli.json("dbdict", "list", "--json") == []
