"""A real sshd on 127.0.0.1 for the rsync-over-ssh tests.

It listens on a free port, with a host key and a client key generated in a temporary
directory, and accepts that key for the current user only. ``Sshd.rsh`` is the ssh command
line (for ``DBDICT_RSYNC_RSH`` / ``SyncConfig.rsh``) that reaches it as ``localhost``.
Skipped with a clear reason only when no sshd binary is installed (Debian: openssh-server).
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tests.support.needs import missing

HOST_ALIAS = "dbdict-test-sshd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_sshd() -> str | None:
    path = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/sbin", os.environ.get("PATH", "")])
    return shutil.which("sshd", path=path)


class Sshd:
    """One sshd process and the client settings that reach it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = base / "host_ed25519"
        self.client_key = base / "client_ed25519"
        self.known_hosts = base / "known_hosts"
        self.config = base / "sshd_config"
        self.log = base / "sshd.log"
        self.proc: subprocess.Popen | None = None

    def rsh_for(self, port: int) -> str:
        """The ssh command line for a given port (another port: an unreachable host)."""
        return (f"ssh -F /dev/null -p {port} -i {self.client_key} -o BatchMode=yes "
                f"-o ConnectTimeout=5 -o StrictHostKeyChecking=yes "
                f"-o UserKnownHostsFile={self.known_hosts} -o HostKeyAlias={HOST_ALIAS} "
                f"-o LogLevel=ERROR")

    @property
    def rsh(self) -> str:
        return self.rsh_for(self.port)

    def start(self, sshd: str) -> "Sshd":
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True, stdin=subprocess.DEVNULL)
        (self.base / "authorized_keys").write_text(
            Path(f"{self.client_key}.pub").read_text())
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"{HOST_ALIAS} {host_pub[0]} {host_pub[1]}\n")
        self.config.write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile none
AuthorizedKeysFile {self.base}/authorized_keys
AllowUsers {self.user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
LogLevel VERBOSE
""")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        check = subprocess.run([sshd, "-t", "-f", str(self.config)], capture_output=True,
                               text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejects its test config: {check.stderr.strip()}")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not start listening within 15 s") from None
                time.sleep(0.05)
        probe = subprocess.run(self.rsh.split() + ["localhost", "true"], capture_output=True,
                               text=True, timeout=30)
        if probe.returncode != 0:
            self.stop()
            raise RuntimeError(f"cannot log in to the test sshd: {probe.stderr.strip()}; "
                               f"log: {self.log.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> Sshd:
    """A running sshd on 127.0.0.1 (session-wide), or a skip if sshd is not installed."""
    binary = find_sshd()
    if binary is None:
        missing("sshd is not installed (Debian/Ubuntu: apt-get install openssh-server)")
    if shutil.which("ssh") is None or shutil.which("rsync") is None:
        missing("ssh or rsync is not installed (apt-get install openssh-client rsync)")
    server = Sshd(tmp_path_factory.mktemp("sshd")).start(binary)
    yield server
    server.stop()
