"""Learning curves from the metrics jobs report (``channel.report``), in a real browser: a
job's page draws its own curves (a choice of key when it reported several), the results page
the best jobs' curves, beside the state keys that hold a list."""
from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from dbdict_worker.constants import Status
from tests.browser.conftest import console_errors, screenshot, wait_js
from tests.support.metricrows import put

JOB_CHART = "echarts.getInstanceByDom(document.getElementById('chart-job-metrics'))"
CURVES = "echarts.getInstanceByDom(document.getElementById('chart-curves'))"


def _finished_jobs(store, n: int) -> list[int]:
    """``n`` DONE jobs with a final valid_error (lower for later jobs), a list-valued
    curve in their state, and reported valid_error and lr curves over 8 steps (two
    attempts: the second redid step 4)."""
    ids = store.enqueue("pkg.exp", [{"depth": k} for k in range(n)]).created
    for _ in ids:
        (b,) = store.book("w1", "node1", n=1)
        final = 1.0 / (b.state["depth"] + 1)
        store.finish(b.token, Status.DONE, state=dict(b.state, valid_error=final,
                                                      state_curve=[3.0, 2.0, final]))
        put(store, [(b.job.id, 1 if s < 4 else 2, s, "valid_error", final + 1.0 / (s + 1))
                    for s in range(8)]
            + [(b.job.id, 1, 4, "valid_error", 99.0)]
            + [(b.job.id, 1, s, "lr", 0.1 * 0.5 ** s) for s in range(8)])
    return ids


def test_reported_curves_on_the_job_page_and_the_results_page(
        page, pg_store, pg_url, serve, artifacts):
    ids = _finished_jobs(pg_store, 25)
    (quiet,) = pg_store.enqueue("pkg.exp", [{"depth": 100}]).created
    server = serve(pg_url)

    page.get(f"{server.url}/jobs/{ids[0]}")
    wait_js(page, f"document.querySelector('#chart-job-metrics canvas') && {JOB_CHART} && "
                  f"{JOB_CHART}.getOption().series.length === 1",
            "the job's curve drawn")
    assert page.find_element(By.ID, "job-metrics-box").is_displayed()
    choice = Select(page.find_element(By.ID, "metric-choice"))
    assert [o.text for o in choice.options] == ["lr", "valid_error"]
    choice.select_by_visible_text("valid_error")
    data = wait_js(page, f"{JOB_CHART}.getOption().yAxis[0].name === 'valid_error' && "
                         f"{JOB_CHART}.getOption().series[0].data", "the valid_error curve")
    # Both attempts make one curve by step; the resumed attempt's step 4 replaces the first's.
    assert [p[0] for p in data] == list(range(8))
    assert data[4][1] == 1.0 + 1.0 / 5
    screenshot(page, artifacts, "job-metrics")
    assert not console_errors(page)

    page.get(f"{server.url}/jobs/{quiet}")
    wait_js(page, "document.querySelector('#job-status .badge') && "
                  "document.querySelector('#job-status .badge').textContent === 'START'",
            "the job without metrics")
    assert not page.find_element(By.ID, "job-metrics-box").is_displayed()

    page.get(server.url + "/results")
    wait_js(page, f"document.querySelector('#chart-curves canvas') && {CURVES} && "
                  f"{CURVES}.getOption().series.length > 0", "the results' curves")
    curve = Select(page.find_element(By.ID, "r-curve"))
    assert [o.text for o in curve.options] == ["lr (reported)", "valid_error (reported)",
                                               "state_curve"]
    # The metric's reported curve is the first shown: the 20 best jobs, best first.
    assert curve.first_selected_option.text == "valid_error (reported)"
    names = page.execute_script(f"return {CURVES}.getOption().series.map(s => s.name);")
    assert names == [f"job {i}" for i in reversed(ids)][:20]
    curve.select_by_visible_text("state_curve")  # the list-valued state key still draws
    wait_js(page, f"{CURVES}.getOption().series.length === 20 && "
                  f"{CURVES}.getOption().series[0].data.length === 3", "the state curves")
    curve.select_by_visible_text("lr (reported)")
    wait_js(page, f"{CURVES}.getOption().yAxis[0].name === 'lr'", "the lr curves")
    screenshot(page, artifacts, "results-metrics")
    assert not console_errors(page)
