"""What the dashboard, ``dbdict report`` and ``dbdict status --watch`` show, as plain
JSON-able dicts: the overview of a sweep, a sorted and filtered page of jobs, one job in full,
and the results to plot. No SQL here (it is in :mod:`dbdict_worker.db.dashboard`); times are
ISO 8601 UTC strings.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, Iterable, Sequence

from dbdict_worker.db.connect import Connection

from dbdict_worker import curves
from dbdict_worker.constants import ENDED, FAILED, SUCCEEDED, Status
from dbdict_worker.db import dashboard as sql
from dbdict_worker.db import curves as dbcurves
from dbdict_worker.db import queries
from dbdict_worker.db.models import Job
from dbdict_worker.records import PROVENANCE, run_facts
from dbdict_worker.store import Store
from dbdict_worker.worker.liveness import DEFAULT_LEASE, is_lost

#: Statuses a job ends in (it will not run again unless requeued).
TERMINAL = ENDED
#: Minutes of history the overview's throughput covers.
WINDOW_MINUTES = 60
#: Failures the overview lists per table.
FAILURES_SHOWN = 5
#: The job columns every page of jobs shows, before the state keys.
PAGE_COLUMNS = ("id", "table", "status", "priority", "attempts", "host", "updated_at")
#: How many jobs the results read at most (the plots show these; the best table is exact).
RESULTS_LIMIT = 10_000
#: Filtered pages count their jobs exactly up to this many, and estimate beyond.
EXACT_COUNT = 10_000
#: Metric names that are better when larger; any other metric is minimized.
_MAXIMIZED = re.compile(r"acc|score|reward|auc|f1|precision|recall|return|ratio_correct", re.I)
_METRIC_NAME = re.compile(r"loss|err|acc|score|objective|metric|result|reward|auc|f1|cost",
                          re.I)
#: A parameter (a plot's x axis or colour) has at most this many distinct values.
MAX_PARAM_VALUES = 50
#: The results' learning curves (reported metrics): of this many best jobs, reading at most
#: CURVE_ROWS rows, each curve thinned to CURVE_POINTS points; a job page's to JOB_POINTS.
CURVE_JOBS = 20
CURVE_ROWS = 200_000
CURVE_POINTS = 500
JOB_POINTS = 5_000


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _select(store: Store, conn: Connection, table: str | Sequence[str] | None,
            where: Iterable[tuple[str, Any]] = (), statuses: Iterable[str] | None = None):
    return store.selection(conn, tables=table, where=list(where),
                           statuses=list(statuses) if statuses is not None else None)


# ---------------------------------------------------------------------------------------------
# Overview


def overview(store: Store, *, tables: str | Sequence[str] | None = None,
             lease: float = DEFAULT_LEASE) -> dict:
    """Per table: counts per status, progress, the last hour's throughput per minute, an ETA
    and the latest failures; the live workers (``lost``: heartbeat older than ``lease``)."""
    def run(conn: Connection) -> dict:
        sel = _select(store, conn, tables)
        now = queries.db_clock(conn)
        counts = queries.count_by_status(conn, sel)
        minutes = sql.finished_per_minute(conn, sel, WINDOW_MINUTES)
        ids = sql.table_ids_by_name(conn, sel)
        failures = {name: sql.latest_failures(conn, sel, tid, FAILURES_SHOWN)
                    for name, tid in ids.items()}
        return {"now": _iso(now), "counts": counts, "minutes": minutes, "failures": failures,
                "tables": list(ids)}
    got = store.transaction(run)
    now = dt.datetime.fromisoformat(got["now"])
    out_tables = []
    for name in got["tables"]:
        counts = {s.name: got["counts"].get((name, s), 0) for s in Status}
        total = sum(counts.values())
        finished = sum(counts[s.name] for s in TERMINAL)
        buckets = [{"t": _iso(_minute(now, ago)), "done": 0, "failed": 0}
                   for ago in range(WINDOW_MINUTES - 1, -1, -1)]
        for tbl, status, ago, n in got["minutes"]:
            if tbl != name or status == Status.CANCELED:
                continue
            bucket = buckets[WINDOW_MINUTES - 1 - ago]
            # A pruned job ended as its search meant: it counts with the done ones.
            bucket["done" if status in SUCCEEDED else "failed"] += n
        done_hour = sum(b["done"] for b in buckets)
        failed_hour = sum(b["failed"] for b in buckets)
        rate = _rate_per_hour(buckets, now)
        remaining = counts["START"] + counts["RUNNING"]
        out_tables.append({
            "table": name, "counts": counts, "total": total, "finished": finished,
            "progress": finished / total if total else 0.0,
            "done_last_hour": done_hour, "failed_last_hour": failed_hour,
            "per_minute": buckets, "rate_per_hour": rate,
            "eta_seconds": remaining / rate * 3600.0 if rate and remaining else
            (0.0 if not remaining else None),
            "failures": [{"id": j.id, "status": j.status.name, "error": j.error,
                          "finished_at": _iso(j.finished_at)}
                         for j in got["failures"][name]],
        })
    return {
        "now": got["now"],
        "tables": out_tables,
        "failed_total": sum(sum(t["counts"][s.name] for s in FAILED) for t in out_tables),
        "workers": workers(store, lease=lease),
    }


def _rate_per_hour(buckets: list[dict], now: dt.datetime) -> float:
    """Jobs ended per hour over the window, or since the first of them ended if that is
    later: a sweep that began 5 minutes ago is not averaged over an hour."""
    ended = [b["done"] + b["failed"] for b in buckets]
    first = next((i for i, n in enumerate(ended) if n), None)
    if first is None:
        return 0.0
    minutes = len(buckets) - 1 - first + (now.second + now.microsecond / 1e6) / 60
    return sum(ended) / max(minutes, 1.0) * 60


def _minute(now: dt.datetime, ago: int) -> dt.datetime:
    """The start of the minute ``ago`` minutes before ``now``."""
    return (now - dt.timedelta(minutes=ago)).replace(second=0, microsecond=0)


def workers(store: Store, *, lease: float = DEFAULT_LEASE) -> list[dict]:
    """The workers that have not stopped, with their running jobs; ``lost`` when their
    heartbeat is older than ``lease`` (killed, or their machine gone)."""
    rows = store.workers()
    info = store.transaction(lambda c: sql.worker_run_info(c, [w.id for w in rows]))
    return [{
        "id": w.id, "host": w.host, "pid": w.pid, "slots": w.slots, "tables": w.tables,
        "gpus": run_facts(info.get(w.id)).get("gpus"),
        "state": w.state, "draining": w.drain_requested,
        "heartbeat_age": w.heartbeat_age, "lost": is_lost(w.state, w.heartbeat_age, lease),
        "started_at": _iso(w.started_at), "jobs": list(w.job_ids),
    } for w in rows]


# ---------------------------------------------------------------------------------------------
# Jobs


def _job_columns(job: Job) -> dict[str, Any]:
    return {"id": job.id, "table": job.table, "status": job.status.name,
            "priority": job.priority, "attempts": job.attempts, "host": job.host,
            "updated_at": _iso(job.updated_at)}


def jobs_page(store: Store, *, table: str | Sequence[str] | None = None,
              where: Iterable[tuple[str, Any]] = (), statuses: Iterable[str] | None = None,
              sort: str = "id", desc: bool = False, offset: int = 0,
              limit: int = 100) -> dict:
    """One page of jobs, sorted by a job column (:data:`sql.SORT_COLUMNS`) or any state
    key (missing values last), with ``total`` the number of jobs the filters select. The
    columns are the job's own, then the state keys of the jobs on the page (and the sort
    key), sorted. With ``--where`` filters matching more than :data:`EXACT_COUNT` jobs,
    ``total`` is the database's estimate and ``total_exact`` false."""
    offset, limit = max(0, int(offset)), max(1, min(int(limit), 1000))

    def run(conn: Connection) -> tuple[tuple[int, bool], list[Job], dict[int, dict]]:
        sel = _select(store, conn, table, where, statuses)
        found = sql.page(conn, sel, sort=sort, desc=desc, offset=offset, limit=limit)
        return (sql.count(conn, sel, exact_up_to=EXACT_COUNT), found,
                queries.select_state(conn, [j.id for j in found]))
    (total, exact), found, states = store.transaction(run)
    keys = sorted({k for s in states.values() for k in s}
                  | ({sort} if sort not in sql.SORT_COLUMNS else set()))
    rows = [{**_job_columns(j), **{k: states[j.id].get(k) for k in keys}} for j in found]
    return {"total": total, "total_exact": exact, "offset": offset, "limit": limit,
            "sort": sort, "desc": desc, "columns": [*PAGE_COLUMNS, *keys], "rows": rows}


def job_detail(store: Store, job_id: int) -> dict:
    """One job in full: its columns, state, provenance, history, log tails and reported
    metrics (per key, ``[step, value]`` pairs over all its attempts)."""
    job, state = store.job(job_id)
    events = store.events(job_id)
    tails = store.log_tails(job_id)
    reported = curves.by_step(curves.points(store, [job_id])).get(job_id, {})
    return {
        "job": {
            "id": job.id, "table": job.table, "experiment": job.experiment,
            "status": job.status.name, "priority": job.priority, "attempts": job.attempts,
            "max_attempts": job.max_attempts, "retried": job.retried,
            "retries": job.retries, "restarts": job.restarts, "host": job.host,
            "worker_id": job.worker_id, "workdir": job.workdir, "error": job.error,
            "created_at": _iso(job.created_at), "booked_at": _iso(job.booked_at),
            "heartbeat_at": _iso(job.heartbeat_at), "finished_at": _iso(job.finished_at),
            "updated_at": _iso(job.updated_at), "not_before": _iso(job.not_before),
            "timeout": job.timeout, "stall_after": job.stall_after,
        },
        "state": state,
        "provenance": {r.name: r.value(job) for r in PROVENANCE},
        "events": [{"at": _iso(e.at), "kind": e.kind, "worker_id": e.worker_id,
                    "detail": e.detail} for e in events],
        "logs": [{"attempt": t.attempt, "stream": t.stream, "tail": t.tail, "size": t.size,
                  "updated_at": _iso(t.updated_at)} for t in tails],
        "metrics": {k: [list(p) for p in curves.thin(c, JOB_POINTS)]
                    for k, c in sorted(reported.items())},
    }


# ---------------------------------------------------------------------------------------------
# Results


def _kind(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in present):
        return "number"
    if present and all(isinstance(v, (list, tuple)) and v and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            for v in present):
        return "curve"
    return "text"


def _distinct(values: list[Any]) -> int:
    seen = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, float) and math.isnan(v):
            v = "nan"
        seen.add(repr(v) if isinstance(v, (list, tuple)) else v)
    return len(seen)


def results(store: Store, *, table: str | Sequence[str] | None = None,
            where: Iterable[tuple[str, Any]] = (),
            statuses: Iterable[str] | None = ("DONE",), metric: str | None = None,
            limit: int = RESULTS_LIMIT, best: int = 10) -> dict:
    """The jobs to plot (the first ``limit`` of the selection, with their state), what kind
    of values each key holds, which keys look like parameters and which like metrics, the
    default choice of axes, and the ``best`` jobs by ``metric`` (the default one if None)
    over the whole selection."""
    where = list(where)

    def run(conn: Connection) -> tuple[int, list[int], dict[int, dict]]:
        sel = _select(store, conn, table, where, statuses)
        ids = sql.first_ids(conn, sel, limit)
        return sql.count(conn, sel)[0], ids, queries.select_state(conn, ids)
    total, ids, states = store.transaction(run)
    keys = sorted({k for s in states.values() for k in s})
    columns = {k: [states[i].get(k) for i in ids] for k in keys}
    catalogue = [{"key": k, "kind": _kind(columns[k]), "distinct": _distinct(columns[k]),
                  "present": sum(v is not None for v in columns[k])} for k in keys]
    kinds = {c["key"]: c for c in catalogue}
    # A key named like a metric is one, however few values it has in a small sweep.
    params = [c["key"] for c in catalogue
              if c["kind"] != "curve" and 1 < c["distinct"] <= MAX_PARAM_VALUES
              and not (c["kind"] == "number" and _METRIC_NAME.search(c["key"]))]
    metrics = [c["key"] for c in catalogue if c["kind"] == "number"]
    default = _default_axes(catalogue, params, metrics, len(ids))
    metric = metric if metric in kinds else default["y"]
    minimize = not (metric and _MAXIMIZED.search(metric))
    ranked = (jobs_page(store, table=table, where=where, statuses=statuses, sort=metric,
                        desc=not minimize, limit=max(best, CURVE_JOBS))["rows"]
              if metric else [])
    best_rows = ranked[:max(best, 0)]
    return {
        "total": total, "rows_shown": len(ids), "keys": catalogue, "params": params,
        "metrics": metrics, "curves": [c["key"] for c in catalogue if c["kind"] == "curve"],
        "default": default, "metric": metric, "minimize": minimize, "best": best_rows,
        "rows": [{"id": i, **states[i]} for i in ids],
        "metric_curves": _metric_curves(store, [r["id"] for r in ranked[:CURVE_JOBS]]
                                        if metric else ids[:CURVE_JOBS]),
    }


def _metric_curves(store: Store, ids: list[int]) -> dict[str, list]:
    """The reported metrics of ``ids`` (best first): per key, ``[job_id, [[step, value],
    ...]]`` for each of those jobs that reported it, in their order."""
    rows = store.transaction(lambda conn: dbcurves.for_jobs(conn, ids, limit=CURVE_ROWS))
    per_job = curves.by_step(rows)
    out: dict[str, list] = {}
    for job in ids:
        for key, curve in per_job.get(job, {}).items():
            out.setdefault(key, []).append(
                [job, [list(p) for p in curves.thin(curve, CURVE_POINTS)]])
    return dict(sorted(out.items()))


def _default_axes(catalogue: list[dict], params: list[str], metrics: list[str],
                  n: int) -> dict:
    """A first choice of plot: the metric (a number named like one, else the number with
    the most distinct values), the parameter with most values on x, the next as colour."""
    by_name = [m for m in metrics if _METRIC_NAME.search(m) and m not in params]
    spread = sorted((m for m in metrics if m not in params),
                    key=lambda k: -next(c["distinct"] for c in catalogue if c["key"] == k))
    y = (by_name or spread or metrics or [None])[0]
    xs = sorted((p for p in params if p != y),
                key=lambda k: -next(c["distinct"] for c in catalogue if c["key"] == k))
    return {"x": xs[0] if xs else None, "y": y, "color": xs[1] if len(xs) > 1 else None,
            "minimize": not (y and _MAXIMIZED.search(y))}


# ---------------------------------------------------------------------------------------------
# Actions (the dashboard offers them only with --allow-actions)


def _action_select(table, ids, where, statuses) -> dict[str, Any]:  # noqa: ANN001
    return {"tables": table, "ids": list(ids) if ids is not None else None,
            "where": list(where), "statuses": list(statuses) if statuses else None}


def cancel(store: Store, *, ids: Iterable[int] | None = None, table: str | None = None,
           where: Iterable[tuple[str, Any]] = (),
           statuses: Iterable[str] | None = None) -> list[int]:
    """Cancel the selected jobs (queued and running ones); the ids changed."""
    return store.cancel(**_action_select(table, ids, where, statuses))


def requeue(store: Store, *, ids: Iterable[int] | None = None, table: str | None = None,
            where: Iterable[tuple[str, Any]] = (), statuses: Iterable[str] | None = None,
            priority: float | None = None) -> list[int]:
    """Put the selected finished, failed or cancelled jobs back in the queue."""
    return store.requeue(priority=priority, **_action_select(table, ids, where, statuses))


def set_priority(store: Store, priority: float, *, ids: Iterable[int] | None = None,
                 table: str | None = None, where: Iterable[tuple[str, Any]] = (),
                 statuses: Iterable[str] | None = None) -> list[int]:
    """Change the priority of the selected jobs."""
    return store.set_priority(float(priority), **_action_select(table, ids, where, statuses))
