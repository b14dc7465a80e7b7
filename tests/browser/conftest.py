"""Browser tests of ``dbdict serve`` and ``dbdict report``: a real ``dbdict serve`` process on
a real PostgreSQL, real workers, and Debian's headless Chromium driven through selenium.

One browser per test module (starting Chromium costs a second or two); one server per test,
on its own fresh database. Screenshots go to ``$DBDICT_TEST_ARTIFACTS`` (default: pytest's
temporary directory, ``browser-artifacts``), and with ``DBDICT_SCREENSHOTS=1`` the README's
also to ``docs/screenshots/``."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.conftest import BIN, Cli, cli, pg_cli, workers  # noqa: F401 (fixtures)
from tests.support.needs import missing
from tests.support.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
#: Seconds a page may take to show what a test waits for.
WAIT = 20


class Server:
    """One ``dbdict serve --port 0`` subprocess; ``url`` is the address it printed."""

    def __init__(self, db_url: str, tmp: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
        env.update({"DBDICT_DB": db_url, "DBDICT_RETRY_SECONDS": "3"})
        self.out_path = tmp / "serve.out"
        self.err_path = tmp / "serve.err"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [str(BIN / "dbdict"), "serve", "--port", "0", "--interval", "0.5", *args],
            stdout=self._out, stderr=self._err, env=env, cwd=tmp)
        found = wait_for(lambda: self._printed_url() or self.proc.poll() is not None, 30,
                         "dbdict serve to print its URL")
        assert found is not True and self.proc.poll() is None, self.output()
        self.url, self.token = found

    def _printed_url(self) -> tuple[str, str | None] | None:
        m = re.search(r"open (http://127\.0\.0\.1:\d+)/(?:#token=(\S+))?", self.out_path.read_text())
        return (m.group(1), m.group(2)) if m else None

    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        self._err.close()


@pytest.fixture
def serve(tmp_path):
    """Starts ``dbdict serve`` (``serve(url, *args)``); each is stopped at the end."""
    started: list[Server] = []

    def start(url: str, *args: str) -> Server:
        s = Server(url, tmp_path, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (one per module), with the browser console log kept."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        missing("chromium and chromedriver are not installed (Debian: chromium "
                "chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser):
    """The module's browser with its console log emptied; left on a blank page at the end
    (its server is gone, its polls must stop)."""
    browser.get_log("browser")
    yield browser
    browser.get("about:blank")
    browser.get_log("browser")


def console_errors(driver, allowed: str | None = None) -> list[dict]:
    """The SEVERE entries of the browser console since the last call (a failed request, a
    script error), except those whose message matches the regular expression ``allowed``."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
            and not (allowed and re.search(allowed, e["message"]))]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Where screenshots are kept."""
    path = os.environ.get("DBDICT_TEST_ARTIFACTS")
    out = Path(path) if path else tmp_path_factory.getbasetemp() / "browser-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


def screenshot(driver, artifacts: Path, name: str, readme: str | None = None) -> Path:
    """Save a screenshot of the page as ``name``.png; ``readme`` names the README's copy,
    written to docs/screenshots/ when DBDICT_SCREENSHOTS=1."""
    path = artifacts / f"{name}.png"
    driver.save_screenshot(str(path))
    if readme and os.environ.get("DBDICT_SCREENSHOTS") == "1":
        docs = REPO / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, docs / f"{readme}.png")
    return path


def wait_js(driver, script: str, what: str, timeout: float = WAIT):
    """Wait until ``script`` (a JavaScript expression) is truthy in the page; its value."""
    return wait_for(lambda: driver.execute_script(f"return ({script});"), timeout, what,
                    interval=0.1)


def text_of(driver, css: str) -> str:
    """The text of the first element matching ``css`` ('' when there is none)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", css)


def table_ids(driver) -> list[int]:
    """The job ids of the jobs table's rows, in order."""
    return [int(i) for i in driver.execute_script(
        "return Array.from(document.querySelectorAll('#jobs-table tbody tr'))"
        ".map(tr => tr.getAttribute('data-id'));")]


def experiment_code(tmp: Path, code: str, module: str = "webexp") -> dict[str, str]:
    """Write ``code`` as module ``module`` for the workers to import; their env."""
    where = tmp / "code"
    where.mkdir(exist_ok=True)
    (where / f"{module}.py").write_text(code)
    return {"PYTHONPATH": str(where)}



def click(driver, css: str, tries: int = 20) -> None:
    """Click the element matching ``css``, found again if a poll redrew it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(tries - 1):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            continue
    driver.find_element(By.CSS_SELECTOR, css).click()
