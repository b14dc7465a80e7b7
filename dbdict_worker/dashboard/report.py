"""``dbdict report``: one HTML file that opens offline (no server, no network): the overview,
the results plots and the jobs table, drawn by the live pages' own script from data inlined
in the file, with ECharts and the style sheet inlined too."""
from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from dbdict_worker.dashboard import data
from dbdict_worker.dashboard.pages import STATIC_DIR, STATUS_ORDER, embed_json, environment, \
    inline_script

#: Jobs of the table a report holds at most (the file stays a few MB).
MAX_ROWS = 5000
#: Jobs read at a time.
PAGE = 1000
#: Rows of the results plots a report holds at most.
MAX_RESULTS = 20000


def collect(store: Any, *, table: str | None = None, where: Sequence[tuple[str, Any]] = (),
            statuses: Sequence[str] | None = None, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """What a report shows, read from ``store``: overview, results, jobs (the first
    ``max_rows`` by id of the selection)."""
    from dbdict_worker.names import table_list

    tables = table_list(table) or None
    where = list(where)
    return {
        "generated": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "table": table, "where": [[k, v] for k, v in where], "statuses": list(statuses or []),
        "overview": data.overview(store, tables=tables),
        "results": data.results(store, table=tables, where=where,
                                statuses=list(statuses or ["DONE"]), limit=MAX_RESULTS),
        "jobs": _jobs(store, tables, where, list(statuses) if statuses else None, max_rows),
    }


def _jobs(store: Any, tables: list[str] | None, where: list, statuses: list[str] | None,
          max_rows: int) -> dict[str, Any]:
    """The first ``max_rows`` jobs by id, read a page at a time, as one page."""
    first = data.jobs_page(store, table=tables, where=where, statuses=statuses, limit=PAGE)
    rows, columns = list(first["rows"]), list(first["columns"])
    while len(rows) < min(first["total"], max_rows):
        more = data.jobs_page(store, table=tables, where=where, statuses=statuses,
                              offset=len(rows), limit=min(PAGE, max_rows - len(rows)))
        if not more["rows"]:
            break
        rows += more["rows"]
        columns += [c for c in more["columns"] if c not in columns]
    fixed = [c for c in columns if c in data.PAGE_COLUMNS]
    return {**first, "offset": 0, "limit": len(rows), "rows": rows,
            "columns": fixed + sorted(c for c in columns if c not in data.PAGE_COLUMNS)}


def render(report: dict[str, Any]) -> str:
    """The self-contained HTML of a report (from :func:`collect`)."""
    config = {"page": "report", "interval": 0, "actions": False, "table": report["table"],
              "tables": [t["table"] for t in report["overview"]["tables"]],
              "statuses": STATUS_ORDER, "data": report}
    return environment().get_template("report.html").render(
        config_json=embed_json(config), report=True, actions=False, generated=report["generated"],
        table=report["table"], filters=_filters(report),
        css=(STATIC_DIR / "style.css").read_text(encoding="utf-8"),
        echarts_js=_script("vendor/echarts.min.js"),
        results_js=_script("results.js"), app_js=_script("app.js"))


def _script(name: str) -> str:
    return inline_script((STATIC_DIR / name).read_text(encoding="utf-8"))


def _filters(report: dict[str, Any]) -> str:
    from dbdict_worker.state import format_value

    parts = [f"{k}={format_value(v)}" for k, v in report["where"]]
    parts += [f"status {s}" for s in report["statuses"]]
    return ", ".join(parts)
