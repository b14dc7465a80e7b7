"""Tests that need a program this machine lacks are skipped, saying why; under
``DBDICT_TEST_STRICT=1`` (set by .ci/run, which installs everything) they fail instead, so a
missing install step cannot turn into silently lost coverage."""
from __future__ import annotations

import os

import pytest


def missing(why: str) -> None:
    """Skip the test (or fail it in strict mode) because ``why``."""
    if os.environ.get("DBDICT_TEST_STRICT") == "1":
        pytest.fail(f"{why} (DBDICT_TEST_STRICT=1: required here)", pytrace=False)
    pytest.skip(why)
