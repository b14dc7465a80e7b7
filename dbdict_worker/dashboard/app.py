"""The ``dbdict serve`` web application: four pages (overview, jobs, a job, results) whose
script polls the JSON endpoints under ``/api/``, and, with ``--allow-actions``, the POST
endpoints that cancel, requeue or re-prioritize jobs.

The pages hold no data: each is a template with an element of configuration; ``app.js``
draws everything from the JSON endpoints, which call :mod:`dbdict_worker.dashboard.data`.
The endpoints are plain functions (Starlette runs them in its thread pool) because the store
is synchronous."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dbdict_worker.params import parse_statuses, parse_where
from dbdict_worker.dashboard import data, security
from dbdict_worker.dashboard.pages import STATIC_DIR, STATUS_ORDER, embed_json, environment, \
    to_json
from dbdict_worker.errors import DbdictError, NotFound, UsageError
from dbdict_worker.names import table_list

#: Rows of one page of the jobs table, at most.
MAX_PAGE = 500
#: Headers on every response: no inline script may run (the pages have none), no framing.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
     b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
ACTIONS = ("cancel", "requeue", "set-priority")


class Dashboard:
    """The state the endpoints share: the store, the table it shows, the action token."""

    def __init__(self, store: Any, *, table: str | None, where: str, interval: float,
                 token: str | None) -> None:
        self.store = store
        self.table = table
        self.where = where
        self.interval = interval
        self.token = token
        self.env = environment()

    # -- pages ---------------------------------------------------------------------------

    def page(self, name: str, request: Request, **extra: Any) -> HTMLResponse:
        config = {"page": name, "interval": self.interval, "actions": self.token is not None,
                  "table": self.table, "tables": self._tables(), "statuses": STATUS_ORDER,
                  **extra}
        html = self.env.get_template(f"{name}.html").render(
            page=name, where=self.where, actions=self.token is not None,
            config_json=embed_json(config), report=False, **extra)
        return HTMLResponse(html)

    def _tables(self) -> list[str]:
        if self.table:
            return table_list(self.table)
        try:
            return self.store.tables()
        except DbdictError:
            return []

    def overview_page(self, request: Request) -> Response:
        return self.page("overview", request)

    def jobs_page(self, request: Request) -> Response:
        return self.page("jobs", request)

    def job_page(self, request: Request) -> Response:
        return self.page("job", request, job_id=request.path_params["job_id"])

    def results_page(self, request: Request) -> Response:
        return self.page("results", request)

    # -- JSON ----------------------------------------------------------------------------

    def selection(self, request: Request) -> dict[str, Any]:
        """table / where / statuses from the query string (UsageError if malformed)."""
        q = request.query_params
        return selection_from(self.table or q.get("table") or None, q.getlist("where"),
                              q.getlist("status"))

    def api_overview(self, request: Request) -> Response:
        tables = table_list(self.table or request.query_params.get("table") or None)
        return json_response(data.overview(self.store, tables=tables or None))

    def api_jobs(self, request: Request) -> Response:
        sel = self.selection(request)
        q = request.query_params
        offset = _int(q.get("offset"), 0, 0, 10**12)
        limit = _int(q.get("limit"), 50, 1, MAX_PAGE)
        return json_response(data.jobs_page(
            self.store, sort=q.get("sort") or "id", desc=q.get("desc") in ("1", "true"),
            offset=offset, limit=limit, **sel))

    def api_job(self, request: Request) -> Response:
        detail = data.job_detail(self.store, request.path_params["job_id"])
        names = table_list(self.table)
        if names and detail["job"]["table"] not in names:
            raise NotFound(f"job {request.path_params['job_id']} is not in table "
                           f"{self.table!r}")
        return json_response(detail)

    def api_results(self, request: Request) -> Response:
        sel = self.selection(request)
        if not sel["statuses"]:
            sel["statuses"] = ["DONE"]
        metric = request.query_params.get("metric") or None
        return json_response(data.results(self.store, metric=metric, **sel))

    # -- actions -------------------------------------------------------------------------

    def api_action(self, request: Request, body: dict[str, Any]) -> Response:
        """Cancel, requeue or re-prioritize ``ids`` or the selection (table / where /
        status, as the jobs page filters), once the guards of :func:`guarded` passed."""
        action = request.path_params["action"]
        if action not in ACTIONS:
            return json_response({"error": f"unknown action {action!r}"}, 404)
        ids = body.get("ids")
        if ids is not None:
            if not isinstance(ids, list) or not all(type(i) is int for i in ids) or not ids:
                raise UsageError("ids must be a non-empty list of job ids")
            sel: dict[str, Any] = {"ids": ids, "where": (), "statuses": None,
                                   "table": table_list(self.table)}
        else:
            sel = {"ids": None, **selection_from(self.table or body.get("table") or None,
                                                 _strings(body.get("where")),
                                                 _strings(body.get("status")))}
            if not (sel["where"] or sel["statuses"] or sel["table"] or body.get("all")):
                raise UsageError("select jobs (a filter, or all: true for every job)")
        if action == "cancel":
            changed = data.cancel(self.store, **sel)
        elif action == "requeue":
            changed = data.requeue(self.store, **sel)
        else:
            priority = body.get("priority")
            if isinstance(priority, bool) or not isinstance(priority, (int, float)):
                raise UsageError("set-priority needs a number: priority")
            changed = data.set_priority(self.store, float(priority), **sel)
        return json_response({"action": action, "count": len(changed),
                              "ids": list(changed)[:1000]})


def selection_from(table: str | None, where: list[str], status: list[str]) -> dict[str, Any]:
    """The data API's selection arguments from ``--where``-style strings and status names."""
    statuses = [s.name for s in parse_statuses(status)]
    return {"table": table_list(table), "where": parse_where([w for w in where if w.strip()]),
            "statuses": statuses or None}


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(to_json(obj), status_code=status, media_type="application/json")


def _int(text: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(text), low), high) if text not in (None, "") else default
    except ValueError:
        raise UsageError(f"not a whole number: {text!r}") from None


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise UsageError("where and status must be lists of strings")


def api(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """An endpoint whose usage errors answer 400 and missing jobs 404, as one-line JSON."""

    def endpoint(request: Request) -> Response:
        try:
            return fn(request)
        except NotFound as exc:
            return json_response({"error": str(exc)}, 404)
        except UsageError as exc:
            return json_response({"error": str(exc)}, 400)
        except DbdictError as exc:
            return json_response({"error": str(exc)}, 503)

    return endpoint


def guarded(dash: Dashboard, allowed: list[str] | None
            ) -> Callable[[Request], Awaitable[Response]]:
    """The action endpoint behind its guards: the token header (403 without it), a
    same-origin Origin, a JSON object body."""
    from starlette.concurrency import run_in_threadpool

    async def endpoint(request: Request) -> Response:
        if not security.token_ok(request.headers.get(security.TOKEN_HEADER), dash.token or ""):
            return json_response({"error": "missing or wrong action token"}, 403)
        if not security.origin_ok(request.headers.get("origin"), request.headers.get("host")):
            return json_response({"error": "cross-origin request refused"}, 403)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return json_response({"error": "the body must be a JSON object"}, 400)
        return await run_in_threadpool(api(lambda r: dash.api_action(r, body)), request)

    return endpoint


class Guard:
    """ASGI middleware: answers only allowed Host names (DNS rebinding) and adds the
    security headers to every response."""

    def __init__(self, app: Any, allowed: list[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if not security.host_ok(host, self.allowed):
            await Response("unknown Host header", status_code=400)(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(store: Any, *, table: str | None = None, interval: float = 2.0,
               token: str | None = None, bind: str = "127.0.0.1") -> Any:
    """The dashboard over ``store``; ``token`` given: the action endpoints exist and
    require it; ``bind``: the address served (which Host names are answered)."""
    dash = Dashboard(store, table=table, where=store.where, interval=interval, token=token)
    routes = [
        Route("/", dash.overview_page),
        Route("/jobs", dash.jobs_page),
        Route("/jobs/{job_id:int}", dash.job_page),
        Route("/results", dash.results_page),
        Route("/api/overview", api(dash.api_overview)),
        Route("/api/jobs", api(dash.api_jobs)),
        Route("/api/jobs/{job_id:int}", api(dash.api_job)),
        Route("/api/results", api(dash.api_results)),
        Mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]
    allowed = security.allowed_hosts(bind)
    if token is not None:
        routes.append(Route("/api/actions/{action}", guarded(dash, allowed),
                            methods=["POST"]))
    app = Starlette(routes=routes)
    return Guard(app, allowed)
