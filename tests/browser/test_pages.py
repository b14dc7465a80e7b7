"""The dashboard's pages in a real browser, against a real PostgreSQL and real workers: the
overview follows jobs as they finish (without reloading), the jobs table filters, sorts and
pages as ``dbdict list --where`` selects, a job page shows its log tail while it runs, the
results page draws its plots, and user strings stay text."""
from __future__ import annotations

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import click, console_errors, experiment_code, screenshot, table_ids, text_of, wait_js
from tests.support.waiting import wait_for

CODE = '''
import time


def work(state, channel):
    """Sleep a little, print, report a metric and a learning curve."""
    time.sleep(state.get("sleep", 0))
    print(f"training with lr={state['lr']}", flush=True)
    state["valid_error"] = round((state["lr"] - 0.03) ** 2 * 100 + 0.05 * state["depth"], 6)
    state["valid_curve"] = [round(1.0 / (i + 1) + state["valid_error"], 6) for i in range(10)]


def chatty(state, channel):
    for i in range(state["lines"]):
        print(f"line {i}", flush=True)
        time.sleep(state["every"])
'''
FAST = ("--heartbeat", "0.3", "--lease", "5")
XSS = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">"


def done_count(driver, table: str = "default") -> int:
    text = driver.execute_script(
        "const c = document.querySelector('.card[data-table=\"' + arguments[0] + '\"] "
        ".count[data-status=DONE] b'); return c ? c.textContent : null;", table)
    return int(text) if text is not None else -1


def test_overview_counts_follow_a_worker_finishing_jobs_without_a_reload(
        page, pg_store, pg_url, serve, workers, tmp_path, artifacts):
    env = experiment_code(tmp_path, CODE)
    pg_store.enqueue("webexp.work", [{"lr": 0.01 * i, "depth": i % 3, "sleep": 0.8}
                                     for i in range(12)])
    server = serve(pg_url)
    page.get(server.url + "/")
    wait_js(page, "document.querySelector('.card .count[data-status=START] b')"
                  " && document.querySelector('.card .count[data-status=START] b')"
                  ".textContent === '12'", "12 queued jobs on the overview")
    assert done_count(page) == 0
    page.execute_script("window.__same_page = true;")  # gone if the page reloads
    w = workers(pg_url, "w", "--slots", "2", "--until-empty", *FAST, env=env)
    # A worker appears in the workers table while it runs, with its host and slots.
    wait_js(page, "document.querySelectorAll('#workers-table tbody tr').length === 1",
            "the live worker in the workers table")
    row = text_of(page, "#workers-table tbody tr")
    assert pg_store.workers()[0].host in row
    wait_for(lambda: done_count(page) >= 4, 30, "4 DONE on the overview")
    screenshot(page, artifacts, "overview-running", readme="overview")  # the worker, live
    seen = set()
    wait_for(lambda: seen.add(done_count(page)) or 12 in seen, 60, "12 DONE on the overview")
    assert len(seen - {-1}) > 2, seen  # it went up in steps, as the jobs finished
    assert page.execute_script("return window.__same_page === true;")
    assert w.wait(60) == 0
    wait_js(page, "/12 of 12 finished/.test(document.querySelector('.card .rates')"
                  ".textContent)", "the progress line at 12 of 12")
    assert page.execute_script(
        "return document.querySelector('.card .bar').style.width") == "100%"
    wait_js(page, "document.querySelectorAll('.card canvas').length > 0",
            "the throughput chart")
    screenshot(page, artifacts, "overview")
    assert not console_errors(page)


def _expected(cli, *args: str) -> list[dict]:
    """What ``dbdict list --json`` selects with these options."""
    return cli.json("dbdict", "list", "--json", *args)


def test_jobs_table_filters_sorts_and_pages_as_dbdict_list(page, pg_store, pg_url, pg_cli,
                                                           serve, artifacts):
    ids = pg_store.enqueue("webexp.work", [
        {"lr": round(0.001 * ((i * 37) % 120), 3), "model": "abc"[i % 3], "seed": i,
         "note": XSS} for i in range(120)]).created
    pg_store.cancel(ids=ids[::4])
    server = serve(pg_url)
    page.get(server.url + "/jobs")
    wait_js(page, "/of 120 job/.test(document.getElementById('jobs-summary').textContent)",
            "the 120 jobs")
    page.find_element(By.ID, "f-where").send_keys("model='b'")
    page.find_element(By.CSS_SELECTOR, "#f-status input[value=START]").click()
    page.find_element(By.ID, "f-apply").click()
    expected = _expected(pg_cli, "--where", "model='b'", "--status", "START")
    assert 25 < len(expected) < 50
    wait_js(page, f"/of {len(expected)} job/.test("
                  "document.getElementById('jobs-summary').textContent)",
            "the filtered count")
    assert table_ids(page) == [r["id"] for r in expected]  # by id, as dbdict list
    # Sort by lr, descending (two clicks on its header), 25 rows a page.
    Select(page.find_element(By.ID, "page-size")).select_by_visible_text("25")
    for _ in range(2):
        before = page.execute_script("return document.querySelector('#jobs-table thead')"
                                     ".textContent;")
        click(page, "#jobs-table th[data-col=lr]")
        wait_js(page, "document.querySelector('#jobs-table thead').textContent !== "
                      + repr(before), "the table sorted again")
    wait_js(page, "document.querySelector('#jobs-table th.sorted').textContent === 'lr ▼'",
            "lr sorted descending")
    by_lr = [r["id"] for r in sorted(expected, key=lambda r: (-r["state"]["lr"], r["id"]))]
    wait_for(lambda: table_ids(page) == by_lr[:25], 10, "the first page sorted by lr")
    lrs = page.execute_script("return Array.from(document.querySelectorAll("
                              "'#jobs-table td[data-col=lr]')).map(td => td.textContent);")
    assert [float(x) for x in lrs] == sorted((r["state"]["lr"] for r in expected),
                                             reverse=True)[:25]
    screenshot(page, artifacts, "jobs")
    page.find_element(By.ID, "page-next").click()
    wait_for(lambda: table_ids(page) == by_lr[25:50], 10, "the second page")
    assert "offset=25" in page.current_url and "sort=lr" in page.current_url
    # The page's state is in its URL: a reload shows the same rows.
    page.refresh()
    wait_for(lambda: table_ids(page) == by_lr[25:50], 10, "the second page after a reload")
    # A user string is text in a cell, never markup.
    assert text_of(page, "#jobs-table td[data-col=note]") == XSS
    assert page.execute_script("return window.__xss;") is None
    assert not page.find_elements(By.CSS_SELECTOR, "#jobs-table td img")
    assert not console_errors(page)


def test_a_bad_filter_shows_its_one_line_error(page, pg_store, pg_url, serve):
    pg_store.enqueue("webexp.work", [{"lr": 0.1}])
    server = serve(pg_url)
    page.get(server.url + "/jobs?where=lr")
    wait_js(page, "!document.getElementById('jobs-error').hidden", "the filter's error")
    assert text_of(page, "#jobs-error") == "--where takes key=value, got 'lr'"
    page.get(server.url + "/jobs?where=dbdict.status%3D1")
    wait_js(page, "/reserved keys/.test(document.getElementById('jobs-error').textContent)",
            "the reserved key's error")
    # The endpoint answered 400, which the console notes; nothing else went wrong.
    assert not console_errors(page, allowed=r"/api/jobs\?where=.* 400 \(Bad Request\)")


def test_a_job_page_shows_its_log_tail_live_and_user_strings_as_text(
        page, pg_store, pg_url, serve, workers, tmp_path, artifacts):
    env = experiment_code(tmp_path, CODE)
    (job_id,) = pg_store.enqueue("webexp.chatty", [{"lines": 20, "every": 0.4,
                                                    "label": XSS}]).created
    server = serve(pg_url)
    page.get(f"{server.url}/jobs/{job_id}")
    wait_js(page, "document.querySelector('#job-status .badge') && "
                  "document.querySelector('#job-status .badge').textContent === 'START'",
            "the queued job")
    workers(pg_url, "w", "--until-empty", *FAST, env=env)
    # While it runs, the tail grows on the page (it is not reloaded).
    wait_js(page, "/line 2\\b/.test(document.getElementById('log-tail').textContent) && "
                  "!/line 19/.test(document.getElementById('log-tail').textContent) && "
                  "document.querySelector('#job-status .badge').textContent === 'RUNNING' && "
                  "document.getElementById('log-live').textContent === 'live'",
            "the first lines in the log tail while the job runs")
    wait_js(page, "/line 19/.test(document.getElementById('log-tail').textContent)",
            "the last line in the log tail", timeout=30)
    wait_js(page, "document.querySelector('#job-status .badge').textContent === 'DONE'",
            "the job DONE")
    tail = text_of(page, "#log-tail")
    assert tail == "".join(f"line {i}\n" for i in range(20))
    events = text_of(page, "#job-events")
    assert "booked" in events and "finished" in events
    fields = text_of(page, "#job-fields")
    assert "webexp.chatty" in fields and pg_store.job(job_id)[0].workdir in fields
    assert text_of(page, "#job-state tr[data-key=label] td") == XSS
    assert page.execute_script("return window.__xss;") is None
    try:
        page.switch_to.alert
        raise AssertionError("an alert opened")
    except NoAlertPresentException:
        pass
    assert "python" in text_of(page, "#job-provenance").lower()
    screenshot(page, artifacts, "job", readme="job")
    assert not console_errors(page)


def test_results_page_draws_its_plots_and_a_click_changes_them(
        page, pg_store, pg_url, serve, workers, tmp_path, artifacts):
    env = experiment_code(tmp_path, CODE)
    pg_store.enqueue("webexp.work", [{"lr": lr, "depth": d, "opt": o}
                                     for lr in (0.001, 0.01, 0.03, 0.1, 0.3)
                                     for d in (1, 2, 3) for o in ("sgd", "adam")])
    assert workers(pg_url, "w", "--slots", "2", "--until-empty", *FAST,
                   env=env).wait(90) == 0
    server = serve(pg_url)
    page.get(server.url + "/results")
    for chart in ("chart-scatter", "chart-parallel", "chart-curves"):
        wait_js(page, f"document.querySelector('#{chart} canvas')", f"the {chart} canvas")
    assert Select(page.find_element(By.ID, "r-y")).first_selected_option.text == "valid_error"
    option = ("echarts.getInstanceByDom(document.getElementById('chart-scatter'))"
              ".getOption().title[0].text")
    wait_js(page, f"{option}.startsWith('valid_error vs ')", "the scatter's title")
    Select(page.find_element(By.ID, "r-x")).select_by_visible_text("depth")
    wait_js(page, f"{option} === 'valid_error vs depth'", "the scatter against depth")
    series = page.execute_script(
        "return echarts.getInstanceByDom(document.getElementById('chart-scatter'))"
        ".getOption().series.reduce((n, s) => n + s.data.length, 0);")
    assert series == 30
    curves = page.execute_script(
        "return echarts.getInstanceByDom(document.getElementById('chart-curves'))"
        ".getOption().series.length;")
    assert curves == 20
    # The best table: the lowest valid_error first, as the database orders them.
    best = [int(r) for r in page.execute_script(
        "return Array.from(document.querySelectorAll('#best-table tbody tr'))"
        ".map(tr => tr.getAttribute('data-id'));")]
    ranked = sorted(pg_store.jobs_with_state(), key=lambda js: (js[1]["valid_error"], js[0].id))
    assert best[0] == ranked[0][0].id
    assert len(best) == 10
    screenshot(page, artifacts, "results", readme="results")
    # The README's jobs table: these jobs, best first.
    page.get(server.url + "/jobs?sort=valid_error")
    wait_js(page, "document.querySelectorAll('#jobs-table tbody tr').length === 30",
            "the 30 jobs sorted by valid_error")
    assert table_ids(page)[0] == ranked[0][0].id
    screenshot(page, artifacts, "jobs-sorted", readme="jobs")
    assert not console_errors(page)
