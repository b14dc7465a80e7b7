"""A private PostgreSQL server for tests that need one to themselves: password
authentication, restarts in the middle of a run, outages. The server itself is
:class:`tests.support.pgcluster.PgServer` (which the chaos soak uses too), not durable: tests
want speed, not crash safety."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.support.pgcluster import PgServer, free_port, server_unavailable

__all__ = ["PrivateServer", "available", "free_port"]


def available() -> str | None:
    """None if a private server can be started here, else the reason why not."""
    return server_unavailable()


class PrivateServer(PgServer):
    """A throwaway cluster in a temporary directory: ``init()``, ``start()``, ``stop()``,
    ``restart(down_seconds)``, ``url(password=..., database=...)``, ``cleanup()``."""

    def __init__(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="dbdict-pg-"))
        self._tmp.chmod(0o755)  # run as root, the server's own user must reach its directory
        super().__init__(self._tmp / "cluster", durable=False)

    def url(self, *, password: str | None = None, database: str = "postgres") -> str:
        pw = self.password if password is None else password
        return f"postgresql://{self.user}:{pw}@127.0.0.1:{self.port}/{database}"

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)
