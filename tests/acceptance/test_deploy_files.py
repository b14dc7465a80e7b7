"""The deploy files: the systemd unit verifies, the scripts parse, and the stop budgets add up.

The numbers that matter in production live in four files that nothing else reads: the unit's
stop timeout, the SLURM signal lead time, HTCondor's vacate time and the grace each of them
gives the worker. These tests read them back and check the arithmetic, run the two batch
wrappers against a stand-in worker to see the options they build, and check the environment
example for passwords and invented variables. No database, no scheduler; well under 5 s.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.needs import missing

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "dbdict-worker@.service"
ENV_EXAMPLE = ROOT / "systemd" / "dbdict-worker.env.example"
DEPLOY = ROOT / "deploy"
SBATCH = DEPLOY / "slurm" / "dbdict-worker.sbatch"
CONDOR_SUB = DEPLOY / "condor" / "dbdict-worker.sub"
CONDOR_SH = DEPLOY / "condor" / "dbdict-worker.sh"
BIN = Path(sys.executable).parent

#: The variables `dbdict-worker start` reads (its contract), and the tuning variables of the
#: store and the sync layer that README.md documents. The env example may use these only.
WORKER_VARS = {
    "DBDICT_DB", "DBDICT_TABLE", "DBDICT_EXPROOT", "DBDICT_SLOTS", "DBDICT_GPUS",
    "DBDICT_GRACE", "DBDICT_HEARTBEAT", "DBDICT_LEASE", "DBDICT_WORKDIR_BASE",
    "DBDICT_RSYNC_RSH",
}
README_TUNING_VARS = {
    "DBDICT_RETRY_SECONDS", "DBDICT_SYNC_PUSH_INTERVAL", "DBDICT_SYNC_ATTEMPTS",
    "DBDICT_SYNC_MAX_SECONDS",
}
DEFAULT_GRACE = 60
DEFAULT_HEARTBEAT = 10


def _directive(text: str, name: str) -> str:
    """The value of the last ``Name=value`` line (systemd: the last assignment wins)."""
    values = re.findall(rf"^{re.escape(name)}=(.*)$", text, re.M)
    assert values, f"{name}= is missing"
    return values[-1].strip()


def _seconds(value: str) -> int:
    assert re.fullmatch(r"\d+", value), f"expected plain seconds, got {value!r}"
    return int(value)


# --- (a) the systemd unit ---------------------------------------------------------------------

def _unit_for_verify(tmp_path: Path) -> Path:
    """The unit as `systemd-analyze verify` can check it on this machine.

    Two substitutions, nothing else: ExecStart must name an executable that exists here (verify
    checks that), so it points at this venv's dbdict-worker (or at this Python running the
    module); and User=/Group= name root, an account that exists everywhere, so the test does not
    depend on a `dbdict` account (verify does not resolve accounts today; this keeps the test
    valid if it ever does). The instance name is "test", as for dbdict-worker@test.service.
    """
    text = UNIT.read_text()
    worker = BIN / "dbdict-worker"
    if worker.is_file() and os.access(worker, os.X_OK):
        exec_start = f"ExecStart={worker} start"
    else:
        exec_start = f"ExecStart={sys.executable} -m dbdict_worker.cli.worker start"
    for pattern, replacement in ((r"^ExecStart=.*$", exec_start), (r"^User=.*$", "User=root"),
                                 (r"^Group=.*$", "Group=root")):
        text, n = re.subn(pattern, lambda _m, r=replacement: r, text, flags=re.M)
        assert n == 1, f"expected one line matching {pattern} in the unit"
    unit = tmp_path / "dbdict-worker@test.service"
    unit.write_text(text)
    return unit


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed (apt-get install systemd; .ci/run does)")
    unit = _unit_for_verify(tmp_path)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    # verify also reports problems of the host's own units; only ours count. Unknown keys and
    # unparsable values are warnings with exit 0, so the unit's lines must not appear at all.
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ours == [], "\n".join(ours)


def test_unit_stop_and_watchdog_budgets():
    text = UNIT.read_text()
    assert _directive(text, "Type") == "notify"
    assert _directive(text, "KillMode") == "mixed"
    assert _directive(text, "KillSignal") == "SIGTERM"
    assert _directive(text, "Restart") == "on-failure"
    assert _directive(text, "EnvironmentFile") == "/etc/dbdict-worker/%i.env"
    assert _directive(text, "ExecStart").split()[1:] == ["start"]
    assert "ExecReload" not in re.findall(r"^(\w+)=", text, re.M), \
        "reload must not drain: draining is systemctl kill --kill-whom=main -s SIGUSR1"
    # The grace, then a minute at least for the final pushes and requeue writes.
    assert _seconds(_directive(text, "TimeoutStopSec")) >= DEFAULT_GRACE + 60
    assert _seconds(_directive(text, "WatchdogSec")) >= 3 * DEFAULT_HEARTBEAT
    # Private /tmp is deleted at stop: the local workdirs (ERR_SYNC copies) must live elsewhere.
    assert _directive(text, "PrivateTmp") == "yes"
    base = _directive(text, "Environment")
    assert base.startswith("DBDICT_WORKDIR_BASE=") and "/tmp" not in base
    # These would hide the GPUs from the experiments.
    assert _directive(text, "PrivateDevices") == "no"
    for name in ("DeviceAllow", "DevicePolicy", "ProtectClock", "MemoryDenyWriteExecute"):
        assert not re.search(rf"^{name}=", text, re.M), f"{name}= breaks GPUs or JITs"


# --- (b) every shell script parses, and none uses eval -----------------------------------------

def _shell_scripts() -> list[Path]:
    scripts = []
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and (path.suffix in (".sh", ".sbatch")
                               or path.read_bytes()[:2] == b"#!"):
            scripts.append(path)
    return scripts


def test_there_are_shell_scripts_to_check():
    names = {p.name for p in _shell_scripts()}
    assert {"dbdict-worker.sh", "dbdict-worker.sbatch", "sweep-from-login-node.sh"} <= names


@pytest.mark.parametrize("script", _shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_script_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    code = "\n".join(line for line in script.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    assert not re.search(r"(^|[;&|(\s])eval\s", code), "no eval in deploy scripts"
    assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"


# --- (c) SLURM: the signal comes early enough for the grace ------------------------------------

def test_sbatch_signal_lead_covers_the_grace():
    text = SBATCH.read_text()
    signal = re.findall(r"^#SBATCH\s+--signal=(\S+)", text, re.M)
    assert len(signal) == 1, "one #SBATCH --signal line"
    m = re.fullmatch(r"B:(?:SIG)?TERM@(\d+)", signal[0])
    assert m, f"--signal must send TERM to the batch shell (B:), got {signal[0]}"
    lead = int(m.group(1))
    assert _seconds(_directive(text, "signal_lead")) == lead, \
        "signal_lead in the script must equal the --signal lead time"
    grace = re.search(r'^grace="\$\{DBDICT_GRACE:-(\d+)\}"', text, re.M)
    assert grace, "the default grace must be readable"
    assert '--grace "$grace"' in text
    # The grace, then a minute for the final pushes and requeue writes, inside the lead.
    assert int(grace.group(1)) + 60 <= lead
    # The worker must be the batch shell itself to receive B: signals.
    assert re.search(r"^exec dbdict-worker start ", text, re.M)
    for option in ("--open-mode=append", "--requeue"):
        assert re.search(rf"^#SBATCH\s+{option}\b", text, re.M), option


# --- (d) HTCondor: soft kill with SIGTERM, and a vacate time above the grace -------------------

def _submit_commands(text: str) -> dict[str, str]:
    commands = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z_+.][\w.]*)\s*=\s*(.*?)\s*$", line)
        if m and not line.lstrip().startswith("#"):
            commands[m.group(1).lower()] = m.group(2)
    return commands


def test_condor_submit_soft_kill_and_vacate_time():
    commands = _submit_commands(CONDOR_SUB.read_text())
    assert commands["kill_sig"] in ("SIGTERM", "15")
    assert commands["want_graceful_removal"].lower() == "true"
    grace = re.search(r"--grace\s+(\d+)", commands["arguments"])
    assert grace, "the submit file must pass --grace explicitly"
    assert int(commands["job_max_vacate_time"]) >= int(grace.group(1)) + 60
    assert "--until-empty" in commands["arguments"]
    assert commands["executable"] == "deploy/condor/dbdict-worker.sh"
    # Never the whole environment (a PGPASSWORD would land in the job ad).
    getenv = [g.strip().lower() for g in re.split(r"[,;\s]+", commands["getenv"]) if g.strip()]
    assert "true" not in getenv and "*" not in getenv and "pgpassword" not in getenv
    assert re.search(r"^queue\s+\d+\s*$", CONDOR_SUB.read_text(), re.M)


# --- (e) the environment example ---------------------------------------------------------------

def test_env_example_has_no_password_and_only_known_variables():
    text = ENV_EXAMPLE.read_text()
    readme = (ROOT / "README.md").read_text()
    for var in README_TUNING_VARS:
        assert var in readme, f"{var} is not documented in README.md any more"
    mentioned = set(re.findall(r"\bDBDICT_[A-Z0-9_]+", text))
    unknown = mentioned - WORKER_VARS - README_TUNING_VARS
    assert not unknown, f"variables the worker does not read: {sorted(unknown)}"
    assert WORKER_VARS <= mentioned, f"undocumented: {sorted(WORKER_VARS - mentioned)}"
    assignments = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", text, re.M)
    for name, value in assignments:
        assert not re.search(r"PASSWORD", name), f"{name}: passwords go in ~/.pgpass"
        # A URL with user:password@ (a port after the host is fine).
        assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"{name} holds a password"
        assert "password=" not in value.lower(), f"{name} holds a password"
    active = {name: value for name, value in re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M)}
    assert active["DBDICT_DB"].startswith("postgresql://")


# --- the batch wrappers build the options they promise -----------------------------------------

@pytest.fixture
def fake_worker(tmp_path) -> Path:
    """A venv whose dbdict-worker prints its arguments (one per line) and OMP_NUM_THREADS."""
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    worker = bindir / "dbdict-worker"
    worker.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\necho "OMP=$OMP_NUM_THREADS"\n')
    worker.chmod(0o755)
    return bindir


def _run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                          env={**base, **env}, timeout=30)


def test_condor_wrapper_passes_assigned_gpus_and_scratch(fake_worker, tmp_path):
    ad = tmp_path / "job.ad"
    ad.write_text("RequestCpus = 8\nRequestGpus = 2\n")
    proc = _run(CONDOR_SH, {
        "VIRTUAL_ENV": str(fake_worker.parent), "DBDICT_DB": "postgresql://me@db:5432/exp",
        "DBDICT_EXPROOT": "/shared/exps", "_CONDOR_JOB_AD": str(ad),
        "_CONDOR_AssignedGPUs": "GPU-3ad0b3e1,GPU-77c1d2aa",
        "CUDA_VISIBLE_DEVICES": "GPU-3ad0b3e1,GPU-77c1d2aa",
        "_CONDOR_SCRATCH_DIR": "/scratch/dir_42", "OMP_NUM_THREADS": "8",
    }, "--until-empty", "--grace", "120")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "start", "--gpus", "GPU-3ad0b3e1,GPU-77c1d2aa",
        "--workdir-base", "/scratch/dir_42/dbdict-work",
        "--until-empty", "--grace", "120", "OMP=4"]


def test_condor_wrapper_without_gpus_uses_the_slot_cpus(fake_worker, tmp_path):
    ad = tmp_path / "job.ad"
    ad.write_text("RequestCpus = 3\n")
    proc = _run(CONDOR_SH, {
        "VIRTUAL_ENV": str(fake_worker.parent), "DBDICT_DB": "postgresql://me@db/exp",
        "DBDICT_EXPROOT": "/shared/exps", "DBDICT_WORKDIR_BASE": "/local/w",
        "_CONDOR_JOB_AD": str(ad), "CUDA_VISIBLE_DEVICES": "10000",
    })
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["start", "--slots", "3", "OMP=1"]


@pytest.mark.parametrize("script", [CONDOR_SH, SBATCH], ids=["condor", "slurm"])
def test_wrappers_refuse_a_password_in_the_url(script, fake_worker):
    proc = _run(script, {"VIRTUAL_ENV": str(fake_worker.parent),
                         "PATH": f"{fake_worker}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                         "DBDICT_DB": "postgresql://me:hunter2@db:5432/exp"})
    assert proc.returncode == 2
    assert "password" in proc.stderr and "hunter2" not in proc.stderr
    assert proc.stdout == ""


def test_sbatch_passes_job_gpus_and_refuses_a_grace_that_does_not_fit(fake_worker):
    env = {"PATH": f"{fake_worker}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "DBDICT_DB": "postgresql://me@db/exp", "DBDICT_EXPROOT": "/shared/exps",
           "SLURM_JOB_ID": "77", "SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1",
           "SLURM_CPUS_PER_TASK": "8", "TMPDIR": "/local/tmp"}
    proc = _run(SBATCH, env, "--table", "demo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "start", "--until-empty", "--grace", "120", "--gpus", "0,1",
        "--workdir-base", "/local/tmp/dbdict-worker-77", "--table", "demo", "OMP=4"]
    proc = _run(SBATCH, {**env, "DBDICT_GRACE": "280"})
    assert proc.returncode == 2 and "does not fit" in proc.stderr
    assert proc.stdout == ""


# --- the README names deploy files that exist -------------------------------------------------

def test_cluster_readme_refers_to_existing_files():
    text = (ROOT / "README.md").read_text()
    paths = set(re.findall(r"\b((?:deploy|systemd)/[\w@./-]+\.(?:sh|sub|sbatch|service|example"
                           r"|md))", text))
    assert paths, "the README should name the deploy files"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing
