"""Where ``dbdict serve`` listens and what it answers: 127.0.0.1 unless ``--host`` is given,
only its own Host names, no file outside its static directory; and ``dbdict report``: one
file that opens in the browser with the network off and draws its plots."""
from __future__ import annotations

import http.client
import socket

import pytest

from dbdict_worker.dashboard import security
from dbdict_worker.errors import UsageError
from tests.browser.conftest import (console_errors, experiment_code, screenshot, table_ids,
                                    text_of, wait_js)
from tests.support.waiting import wait_for

CODE = '''
def work(state, channel):
    state["loss"] = (state["lr"] - 0.1) ** 2 + state["width"] / 100
    state["loss_curve"] = [state["loss"] + 1.0 / (i + 1) for i in range(6)]
'''
#: A value that would end the report's JSON element and run a script, were it not escaped.
BREAKOUT = "</script><script>window.__xss = 1</script><!-- x"


def get(url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no normalisation of ``..`` by the client)."""
    netloc = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(netloc, timeout=10)
    conn.putrequest("GET", path, skip_host=host is not None)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_the_bind_rules():
    assert security.check_bind("127.0.0.1", explicit=False) is None
    assert security.check_bind("::1", explicit=False) is None
    with pytest.raises(UsageError, match="without --host"):
        security.check_bind("0.0.0.0", explicit=False)
    assert "warning" in security.check_bind("0.0.0.0", explicit=True)
    assert security.host_ok("127.0.0.1:8765", security.allowed_hosts("127.0.0.1"))
    assert security.host_ok("[::1]:9000", security.allowed_hosts("127.0.0.1"))
    assert security.host_ok("localhost", security.allowed_hosts("127.0.0.1"))
    assert not security.host_ok("evil.example:8765", security.allowed_hosts("127.0.0.1"))
    assert not security.host_ok(None, security.allowed_hosts("127.0.0.1"))
    assert security.origin_ok(None, "127.0.0.1:1")  # curl: the token decides
    assert security.origin_ok("http://127.0.0.1:1", "127.0.0.1:1")
    assert not security.origin_ok("http://127.0.0.1:2", "127.0.0.1:1")
    assert not security.origin_ok("null", "127.0.0.1:1")
    assert security.token_ok("abc", "abc") and not security.token_ok("", "abc")


def _outside_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


def test_it_listens_on_loopback_only_and_answers_only_its_host_names(pg_url, serve, pg_cli):
    server = serve(pg_url)
    assert server.url.startswith("http://127.0.0.1:")
    assert "ssh -N -L" in server.output() and "postgres@" in server.output()
    port = int(server.url.rsplit(":", 1)[1])
    outside = _outside_address()
    if outside:  # not reachable from the network
        with pytest.raises(OSError):
            socket.create_connection((outside, port), timeout=3).close()
    assert get(server.url, "/")[0] == 200
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
    assert get(server.url, "/api/overview", host=f"evil.example:{port}")[0] == 400
    # A bad address is refused at once, with one line.
    proc = pg_cli("dbdict", "serve", "--host", "192.0.2.1", "--port", "0", ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot listen on 192.0.2.1")


def test_an_explicit_other_host_warns(pg_url, serve):
    server = serve(pg_url, "--host", "0.0.0.0")
    assert "warning: listening on '0.0.0.0'" in server.output()
    assert get(server.url, "/api/overview")[0] == 200


def test_the_password_of_the_database_url_is_never_shown(private_pg, serve):
    url = private_pg.url()
    assert ":" in url.split("@")[0].split("//")[1], "the private server's URL has a password"
    password = url.split("@")[0].rsplit(":", 1)[1]
    from dbdict_worker.store import Store

    Store.open(url, check_schema=False).upgrade()
    server = serve(url)
    assert password not in server.output()
    assert password.encode() not in get(server.url, "/")[1]


@pytest.mark.parametrize("path", [
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/vendor/%2e%2e/%2e%2e/security.py",
    "/static//etc/passwd",
])
def test_no_file_outside_the_static_directory(pg_url, serve, path):
    server = serve(pg_url)
    status, body = get(server.url, path)
    assert status in (400, 404), (status, body[:200])
    assert b"root:" not in body and b"def " not in body
    assert get(server.url, "/static/app.js")[0] == 200
    assert get(server.url, "/static/vendor/LICENSE")[0] == 200


def test_the_report_opens_offline_and_draws_its_plots(page, pg_store, pg_url, pg_cli,
                                                      workers, tmp_path, artifacts):
    env = experiment_code(tmp_path, CODE, module="repexp")
    pg_store.enqueue("repexp.work", [{"lr": lr, "width": w, "note": BREAKOUT}
                                     for lr in (0.01, 0.1, 0.3) for w in (8, 16)])
    assert workers(pg_url, "w", "--until-empty", "--heartbeat", "0.3",
                   env=env).wait(60) == 0
    pg_store.enqueue("repexp.work", [{"lr": 1.0, "width": 1, "note": "queued"}])
    out = tmp_path / "sweep.html"
    proc = pg_cli("dbdict", "report", "-o", str(out))
    assert "wrote" in proc.stderr and "7 jobs" in proc.stderr
    html = out.read_text()
    assert "<script src" not in html and "<link rel=\"stylesheet\"" not in html
    assert "http://" not in html.split("<script>", 1)[0]  # no resource from the network
    assert BREAKOUT not in html  # escaped in the embedded JSON
    page.set_network_conditions(offline=True, latency=0, download_throughput=0,
                                upload_throughput=0)
    try:
        page.get(out.as_uri())
        for chart in ("chart-scatter", "chart-parallel", "chart-curves"):
            wait_js(page, f"document.querySelector('#{chart} canvas')", f"{chart} drawn")
        wait_js(page, "document.querySelectorAll('#jobs-table tbody tr').length === 7",
                "the jobs table")
        assert text_of(page, ".card .count[data-status=DONE] b") == "6"
        assert text_of(page, ".card .count[data-status=START] b") == "1"
        assert text_of(page, "#jobs-table td[data-col=note]") == BREAKOUT
        assert page.execute_script("return window.__xss;") is None
        assert text_of(page, "#r-y option:checked") == "loss"
        # The table sorts and filters here too, without a server.
        page.find_element("css selector", "#f-status input[value=START]").click()
        page.find_element("css selector", "#f-apply").click()
        wait_for(lambda: len(table_ids(page)) == 1, 10, "the START job alone")
        screenshot(page, artifacts, "report")
        assert not console_errors(page)
    finally:
        page.delete_network_conditions()
