"""The README's quick start works exactly as written, on a machine with no database set up."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_quick_start_command_runs_as_written(tmp_path):
    text = README.read_text()
    block = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "the README lost its quick start block"
    command = block.group(1).strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The user's documented command line, run the way a user's shell runs it.
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("id "))):]
    assert table[0].split() == ["id", "status", "first", "result", "second"]
    rows = [ln.split() for ln in table[1:]]
    assert len(rows) == 6
    for _, status, first, result, second in rows:
        assert status == "DONE" and int(result) == int(first) + int(second)
    assert (tmp_path / "dbdict.sqlite").exists()
    assert "created the SQLite file" in proc.stderr


def test_ci_runs_the_readmes_set_up_and_test_commands():
    """CI must run what a user is told to run: the README's development set-up installs
    the same extras, and its test command is the one .ci/run executes."""
    text = README.read_text()
    section = text[text.index("## Development and tests"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README lost its development commands"
    readme_lines = [ln.strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert readme_lines[-1] == "python -m pytest"
    ci = (README.parent / ".ci" / "run").read_text()
    assert re.search(r"^python -m pytest$", ci, re.M), "CI does not run the README's command"
    assert "pip install -e '.[test]'" in readme_lines[0]
    assert "-e '.[test]'" in ci
