"""``dbdict search --status NAME``: a search's progress, best trial and pending trials, read
from the database alone (no Optuna needed)."""
from __future__ import annotations

import json
import math
from typing import Any

from dbdict_worker.constants import Status
from dbdict_worker.db import search as dbsearch
from dbdict_worker.errors import NotFound
from dbdict_worker.state import format_value


def search_status(store: Any, name: str) -> dict[str, Any]:
    """The search's arguments, counts by outcome, best trial and pending trials."""
    def read(conn: Any) -> tuple[dict[str, Any] | None, list[dbsearch.TrialRow]]:
        found = dbsearch.get_search(conn, name)
        return found, (dbsearch.trials(conn, found["id"]) if found else [])

    found, rows = store.transaction(read)
    if found is None:
        raise NotFound(f"no search named {name!r}")
    objective, sign = found["objective"], (1 if found["direction"] == "minimize" else -1)
    space = json.loads(found["space"])
    counts = {"done": 0, "failed": 0, "pruned": 0, "pending": 0}
    best, pending = None, []
    for r in rows:
        if r.status in (Status.START, Status.RUNNING):
            counts["pending"] += 1
            pending.append({"trial": r.trial, "job_id": r.job_id, "status": r.status.name,
                            "params": {k: r.state[k] for k in space if k in r.state}})
        elif r.status == Status.PRUNED:
            counts["pruned"] += 1
        else:
            v = r.state.get(objective)
            ok = (r.status == Status.DONE and isinstance(v, (int, float))
                  and not isinstance(v, bool) and not math.isnan(v))
            counts["done" if ok else "failed"] += 1
            if ok and (best is None or sign * v < sign * best["value"]):
                best = {"trial": r.trial, "job_id": r.job_id, "value": float(v),
                        "params": {k: r.state[k] for k in r.state if k != objective
                                   and not k.startswith("dbdict.")}}
    return {"name": name, "experiment": found["experiment"], "table": found["table"],
            "objective": objective, "direction": found["direction"],
            "sampler": found["sampler"], "pruner": found["pruner"],
            "budget": found["budget"], "trials": len(rows), "counts": counts,
            "finished": found["finished_at"] is not None, "best": best, "pending": pending}


def status_lines(st: dict[str, Any]) -> list[str]:
    """``--status`` for people."""
    c = st["counts"]
    state = "finished" if st["finished"] else "in progress"
    lines = [f"search {st['name']} ({state}): {st['experiment']} on table {st['table']}, "
             f"{st['direction']} {st['objective']}, sampler {st['sampler']}, "
             f"pruner {st['pruner']}",
             f"trials: {st['trials']} of {st['budget']}: {c['done']} done, {c['failed']} "
             f"failed, {c['pruned']} pruned, {c['pending']} pending"]
    b = st["best"]
    if b:
        params = " ".join(f"{k}={format_value(v)}" for k, v in sorted(b["params"].items()))
        lines.append(f"best: job {b['job_id']} (trial {b['trial']}) "
                     f"{st['objective']}={b['value']:.6g} {params}")
    else:
        lines.append("best: none yet")
    for p in st["pending"]:
        params = " ".join(f"{k}={format_value(v)}" for k, v in sorted(p["params"].items()))
        lines.append(f"pending: trial {p['trial']} job {p['job_id']} {p['status']} {params}")
    return lines
