"""provenance.py: the git facts of the experiment's code and the facts of an attempt, with a
real git in temporary repositories; nothing here may fail an enqueue."""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys

import pytest

from dbdict_worker import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def make_repo(path, files: dict[str, str]):
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    git(path, "config", "user.email", "t@example.org")
    git(path, "config", "user.name", "t")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return path


@needs_git
def test_clean_then_dirty_then_other_diff(tmp_path):
    repo = make_repo(tmp_path / "proj", {"exp.py": "def experiment(s, c):\n    pass\n"})
    head = git(repo, "rev-parse", "HEAD").strip()
    clean = provenance.git_state(repo / "exp.py", file=str(repo / "exp.py"))
    assert clean == {"git_repo": str(repo), "git_commit": head, "git_dirty": False,
                     "git_diff_hash": None}
    (repo / "exp.py").write_text("def experiment(s, c):\n    return None\n")
    dirty = provenance.git_state(repo)
    assert dirty["git_dirty"] is True and dirty["git_commit"] == head
    # The hash is sha256 of `git diff HEAD`, as a user can check it.
    diff = subprocess.run(["git", "-C", str(repo), "diff", "--binary", "HEAD"],
                          capture_output=True, check=True).stdout
    assert dirty["git_diff_hash"] == hashlib.sha256(diff).hexdigest()
    (repo / "exp.py").write_text("def experiment(s, c):\n    return 1\n")
    assert provenance.git_state(repo)["git_diff_hash"] not in (None, dirty["git_diff_hash"])
    # Untracked files do not make a checkout dirty ...
    (repo / "exp.py").write_text("def experiment(s, c):\n    pass\n")
    (repo / "out.csv").write_text("1,2\n")
    assert provenance.git_state(repo)["git_dirty"] is False
    # ... unless the experiment's own module is one of them: the commit lacks its code.
    (repo / "new_exp.py").write_text("x = 1\n")
    facts = provenance.git_state(repo / "new_exp.py", file=str(repo / "new_exp.py"))
    assert facts["git_dirty"] is True and facts["git_diff_hash"]


@needs_git
def test_outside_a_repository_or_without_a_commit(tmp_path):
    assert provenance.git_state(tmp_path) == dict.fromkeys(
        ("git_repo", "git_commit", "git_dirty", "git_diff_hash"))
    (tmp_path / "empty").mkdir()
    git(tmp_path / "empty", "init", "-q")
    facts = provenance.git_state(tmp_path / "empty")
    assert facts["git_repo"] == str(tmp_path / "empty") and facts["git_commit"] is None


def test_without_git_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no git, no nvidia-smi
    assert set(provenance.git_state(tmp_path).values()) == {None}
    assert provenance.gpu_names() in ([], provenance.gpu_names())  # /proc only, never fails


@needs_git
def test_module_file_is_found_without_importing(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "proj", {"pkg_never_imported/__init__.py": "raise SystemExit(9)\n",
                                         "pkg_never_imported/train.py": "def run(s, c): pass\n"})
    monkeypatch.syspath_prepend(str(repo))
    path = provenance.module_file("pkg_never_imported.train.run")
    assert path == str(repo / "pkg_never_imported" / "__init__.py")
    assert "pkg_never_imported" not in sys.modules
    # Not on sys.path but in the current directory (where dbdict-enqueue runs).
    make_repo(tmp_path / "other", {"solo_mod_here.py": "x = 1\n"})
    monkeypatch.chdir(tmp_path / "other")
    assert provenance.module_file("solo_mod_here.experiment") == \
        str(tmp_path / "other" / "solo_mod_here.py")
    assert provenance.module_file("no_such_module_anywhere.x") is None


@needs_git
def test_submission_of_a_module_and_of_a_command(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "proj", {"exp_in_repo.py": "def experiment(s, c): pass\n"})
    monkeypatch.syspath_prepend(str(repo))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sub = provenance.submission("exp_in_repo.experiment", cwd=str(elsewhere),
                                argv=["/usr/bin/dbdict-enqueue", "exp_in_repo.experiment", "x=1"])
    assert json.loads(sub["command"]) == ["dbdict-enqueue", "exp_in_repo.experiment", "x=1"]
    assert sub["git_repo"] == str(repo) and sub["git_dirty"] is False
    assert sub["cwd"] == str(elsewhere) and sub["user"] and sub["host"]
    # A command experiment: the repository of the current directory, here none.
    cmd = provenance.submission("cmd:...", is_command=True, cwd=str(elsewhere), argv=["x"])
    assert cmd["git_repo"] is None and cmd["git_commit"] is None
    assert provenance.submission("exp_in_repo.experiment", code=False, argv=["x"]).get(
        "git_commit") is None


def test_run_info_and_gpu_selection(tmp_path, monkeypatch):
    info = json.loads(provenance.run_info_json())
    assert info["python"] == platform.python_version()
    assert info["version"] == provenance.dbdict_version()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert provenance.gpu_names() == []  # no GPU visible: none, whatever the machine has
    assert provenance.run_info()["gpus"] is None
