"""Workdir layout and naming, and exproot parsing (no processes)."""
from __future__ import annotations

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.errors import UsageError
from dbdict_worker.job.sync import ExpRoot, SyncConfig, Syncer, safe_segment
from dbdict_worker.job.workdir import MAX_NAME, Workdir, default_name


def test_default_name_is_readable_safe_bounded_and_unique():
    name = default_name("pkg.train.run", {"lr": 0.1, "n": 3})
    assert name.startswith("run,lr=0.1,n=3-")
    assert default_name("pkg.train.run", {"n": 3, "lr": 0.1}) == name, "order does not matter"
    assert default_name("pkg.train.run", {"lr": 0.1, "n": 4}) != name
    assert default_name("pkg.other.run", {"lr": 0.1, "n": 3}) != name, \
        "another experiment with the same parameters gets another directory"
    assert default_name("pkg.train.run", {"lr": 1}) != default_name("pkg.train.run",
                                                                    {"lr": 1.0})
    nasty = default_name("pkg.exp", {"path": "../../etc/passwd $(rm -rf ~)", "s": "a b\tc'\""})
    assert "/" not in nasty and " " not in nasty and "$" not in nasty and "'" not in nasty
    long = default_name("pkg.exp", {f"key{i}": "x" * 50 for i in range(50)})
    assert len(long) <= MAX_NAME
    assert not long.startswith(("-", ".")) and not nasty.startswith(("-", "."))


def test_orig_is_written_once_and_current_tracks_status(tmp_path):
    wd = Workdir(tmp_path / "job")
    wd.create()
    assert wd.write_orig({"lr": 0.1}) is True
    assert wd.write_orig({"lr": 0.5}) is False
    assert wd.read_orig() == {"lr": 0.1}
    assert wd.status() is None
    wd.write_current({"lr": 0.1, "step": 3, "dbdict.status": "RUNNING"})
    assert wd.status() == Status.RUNNING
    assert wd.starting_state({"lr": 0.1}) == {"lr": 0.1, "step": 3}, "resumes from current"
    assert wd.starting_state({"lr": 0.1}, resume=False) == {"lr": 0.1}


def test_exproot_forms():
    assert ExpRoot.parse("ssh://host:/abs/path/") == ExpRoot("/abs/path", "host")
    assert ExpRoot.parse("ssh://me@host.example.org:rel/dir") == ExpRoot("rel/dir",
                                                                          "me@host.example.org")
    local = ExpRoot.parse("some/dir")
    assert local.host is None and local.path.startswith("/")
    job = ExpRoot.parse("ssh://h:/r").job("mydb", "sweep 1", 17)
    assert job.path == "/r/mydb/sweep 1/17"
    assert job.rsync_arg() == "h:/r/mydb/sweep 1/17/"
    assert str(job) == "ssh://h:/r/mydb/sweep 1/17"


@pytest.mark.parametrize("text", ["ssh://-oProxyCommand=touch%20x:/p", "ssh://host", "ssh://:p",
                                  "ssh://host:", "http://host/p", "", "ssh://a b:/p",
                                  "ssh://h;id:/p"])
def test_bad_exproots_are_refused(text):
    with pytest.raises(UsageError):
        ExpRoot.parse(text)


@pytest.mark.parametrize("seg", ["", ".", "..", "a/b", "x\ny", "nul\x00"])
def test_unsafe_segments_are_refused(seg):
    with pytest.raises(UsageError):
        safe_segment(seg)


def test_rsync_gets_an_argument_list_with_protected_args(tmp_path, monkeypatch):
    monkeypatch.setenv("DBDICT_RSYNC_RSH", "ssh -p 2222 -o 'IdentityFile=/k ey'")
    config = SyncConfig.from_env(attempts=1)
    assert config.rsh_argv() == ["ssh", "-p", "2222", "-o", "IdentityFile=/k ey"]
    syncer = Syncer(ExpRoot.parse("ssh://h:/r/x y"), tmp_path, config)
    argv = syncer.rsync_argv(str(tmp_path) + "/", syncer.remote.rsync_arg())
    assert argv[0] == "rsync" and "-s" in argv and "-a" in argv
    assert "--exclude=*.no_sync" in argv
    assert argv[argv.index("-e") + 1] == "ssh -p 2222 -o 'IdentityFile=/k ey'"
    assert argv[-1] == "h:/r/x y/"
    monkeypatch.setenv("DBDICT_SYNC_ATTEMPTS", "many")
    with pytest.raises(UsageError, match="DBDICT_SYNC_ATTEMPTS"):
        SyncConfig.from_env()
