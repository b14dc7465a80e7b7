"""``dbdict serve --allow-actions``: a cancel clicked on a job's page stops it under its real
worker; the action endpoints refuse a request without the token (403) or from another
origin, and do not exist without ``--allow-actions``."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from dbdict_worker.constants import Status
from tests.acceptance.workers import alive
from tests.browser.conftest import click, console_errors, text_of, wait_js
from tests.support.waiting import wait_for

FAST = ("--heartbeat", "0.3", "--lease", "5")


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    """POST ``body`` as JSON; (status, JSON answer)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"text": text.decode(errors="replace")}


def test_cancel_from_the_job_page_stops_the_running_job(page, pg_store, pg_url, serve,
                                                       workers):
    (job_id,) = pg_store.enqueue("dbdict_worker.examples.hang", [{}]).created
    w = workers(pg_url, "w", *FAST)
    wait_for(lambda: pg_store.job(job_id)[0].status == Status.RUNNING, 30, "the job running")
    server = serve(pg_url, "--allow-actions")
    assert server.token and len(server.token) >= 32
    # The URL printed carries the token in its fragment (never sent to the server); the
    # page keeps it in sessionStorage and removes it from the address bar.
    page.get(f"{server.url}/jobs/{job_id}#token={server.token}")
    wait_js(page, "document.querySelector('#job-status .badge') && "
                  "document.querySelector('#job-status .badge').textContent === 'RUNNING'",
            "the running job")
    assert "#token" not in page.current_url
    assert page.execute_script("return document.cookie;") == ""
    w.wait_log(f"job {job_id} booked")
    click(page, "#act-cancel")
    wait_js(page, "document.querySelector('#job-status .badge').textContent === 'CANCELED'",
            "the job CANCELED on its page")
    assert pg_store.job(job_id)[0].status == Status.CANCELED
    # The worker noticed and killed the experiment's process, and lives on.
    w.wait_log(f"job {job_id}: stopped")
    killed = re.search(r"job process (\d+) no longer ours: killed", w.log())
    assert killed, w.log()
    wait_for(lambda: not alive(int(killed.group(1))), 10, "the job's process gone")
    assert alive(w.pid)
    assert not console_errors(page)


def test_actions_need_the_token_and_the_page_s_own_origin(pg_store, pg_url, serve):
    ids = pg_store.enqueue("dbdict_worker.examples.noop", [{"i": i} for i in range(4)]).created
    server = serve(pg_url, "--allow-actions")
    url = f"{server.url}/api/actions/cancel"
    assert post(url, {"ids": ids})[0] == 403
    assert post(url, {"ids": ids}, {"X-Dbdict-Token": "x" + server.token[1:]})[0] == 403
    token = {"X-Dbdict-Token": server.token}
    assert post(url, {"ids": ids}, {**token, "Origin": "http://evil.example"})[0] == 403
    assert {j.status for j in pg_store.jobs()} == {Status.START}  # nothing changed
    # A filter without anything selected is refused, not taken as "every job".
    assert post(url, {}, token)[0] == 400
    status, out = post(f"{server.url}/api/actions/set-priority",
                       {"where": ["i=1"], "priority": 7}, token)
    assert (status, out["ids"]) == (200, [ids[1]])
    assert pg_store.job(ids[1])[0].priority == 7
    status, out = post(url, {"ids": [ids[0]]}, {**token, "Origin": server.url})
    assert (status, out["count"]) == (200, 1)
    assert pg_store.job(ids[0])[0].status == Status.CANCELED
    status, out = post(url, {"where": ["i=2"], "status": ["START"]}, token)
    assert out["ids"] == [ids[2]]
    status, out = post(f"{server.url}/api/actions/requeue", {"where": ["bad"]}, token)
    assert (status, out["error"]) == (400, "--where takes key=value, got 'bad'")


def test_without_allow_actions_there_are_no_actions(page, pg_store, pg_url, serve):
    (job_id,) = pg_store.enqueue("dbdict_worker.examples.noop", [{}]).created
    server = serve(pg_url)
    assert server.token is None and "token" not in server.output()
    status, _ = post(f"{server.url}/api/actions/cancel", {"ids": [job_id]},
                     {"X-Dbdict-Token": "anything"})
    assert status in (404, 405)
    page.get(f"{server.url}/jobs/{job_id}")
    wait_js(page, "document.querySelector('#job-status .badge')", "the job page")
    assert page.execute_script("return document.querySelectorAll('button[data-action]')"
                               ".length;") == 0
    page.get(f"{server.url}/jobs")
    wait_js(page, "document.querySelectorAll('#jobs-table tbody tr').length === 1",
            "the jobs table")
    assert not page.execute_script("return document.getElementById('bulk-actions');")
    assert text_of(page, "#jobs-table tbody tr td[data-col=status]") == "START"
    assert pg_store.job(job_id)[0].status == Status.START
