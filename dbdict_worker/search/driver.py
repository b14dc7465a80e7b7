"""The search driver: keeps up to ``max_pending`` trials queued or running, tells the sampler
the finished ones, asks it for the next points and enqueues them as ordinary jobs, until the
budget is spent.

Everything it knows is in the database: the search's row and its trials (jobs with
``search_id`` and ``trial``). A driver that stops (Ctrl-C, kill -9, a lost machine) is
restarted with the same arguments and continues; two drivers on one search take turns by a
database lock (:class:`~dbdict_worker.db.search.SearchLock`).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from dbdict_worker import state as statemod
from dbdict_worker.constants import DEFAULT_MAX_ATTEMPTS, DEFAULT_TABLE
from dbdict_worker.db import search as dbsearch
from dbdict_worker.db import enqueue as enqueueq
from dbdict_worker.errors import DbdictError, UsageError
from dbdict_worker.names import check_table_name
from dbdict_worker.search import study as studymod
from dbdict_worker.search.space import Space, load_space, parse_space

DIRECTIONS = ("minimize", "maximize")


@dataclass
class Outcome:
    """How a search ended: its name, the best trial (None if no trial completed), counts."""

    name: str
    best: dict[str, Any] | None
    counts: dict[str, int] = field(default_factory=dict)


def derive_name(experiment: str, fields: Mapping[str, Any]) -> str:
    """A name from the experiment and a hash of the arguments: the same command gives the
    same name, so running it again continues the search."""
    text = json.dumps({k: fields[k] for k in sorted(fields)}, sort_keys=True, default=str)
    short = experiment.rsplit(".", 1)[-1].rsplit(":", 1)[-1] or "search"
    return f"{short}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"


def _space_of(space: Any) -> tuple[Space, Any]:
    if isinstance(space, (str, os.PathLike)):
        return load_space(space)
    if isinstance(space, Mapping):
        return parse_space(space), dict(space)
    raise UsageError("space must be a space file's path or a mapping of parameters")


def run(store: Any, experiment: str, space: Any, *, objective: str,
        direction: str = "minimize", sampler: str = "tpe", pruner: str = "none",
        budget: int, max_pending: int, seed: int | None = None, table: str | None = None,
        name: str | None = None, prune_on: str | None = None, poll: float = 1.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS, policy: Mapping[str, Any] | None = None,
        echo: Callable[[str], None] | None = None) -> Outcome:
    """Run (or continue) a search until ``budget`` trials exist and none is pending.

    ``space``: a space file's path or its parsed mapping. ``name``: the search's name (default:
    derived from the arguments); a search of that name continues if its arguments are the
    same, else UsageError. ``prune_on``: the reported metric the pruner reads (default: the
    objective). ``echo``: gets one line per finished trial, and the waiting notice.
    """
    say = echo or (lambda line: None)
    parsed, raw = _space_of(space)
    if direction not in DIRECTIONS:
        raise UsageError(f"unknown direction {direction!r} (minimize or maximize)")
    if sampler not in studymod.SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r} (one of {', '.join(studymod.SAMPLERS)})")
    if pruner not in studymod.PRUNERS:
        raise UsageError(f"unknown pruner {pruner!r} (one of {', '.join(studymod.PRUNERS)})")
    if budget < 1 or max_pending < 1:
        raise UsageError("--budget and --max-pending must be at least 1")
    statemod.check_key(objective)
    if sampler == "grid":
        budget = min(budget, studymod.grid_size(parsed))
    table = check_table_name(table or store.table or DEFAULT_TABLE)
    fields = {"experiment": experiment, "space": json.dumps(raw, sort_keys=True),
              "objective": objective, "direction": direction, "sampler": sampler,
              "pruner": pruner, "budget": budget, "max_pending": max_pending, "seed": seed,
              "options": json.dumps({"prune_on": prune_on or objective}, sort_keys=True)}
    name = name or derive_name(experiment, {**fields, "table": table})
    lock = dbsearch.SearchLock(store.engine, name)
    try:
        lock.acquire(poll=min(poll, 0.5), on_wait=lambda: say(
            f"search {name}: another driver is acting on it; waiting for its lock"))
        search_id = store.transaction(lambda c: _open_search(c, name, table, fields))
        driver = Driver(store, lock, name, search_id, parsed, table=table, fields=fields,
                        seed=seed, max_attempts=max_attempts, policy=policy, say=say)
        return driver.loop(poll)
    finally:
        lock.release()


def _open_search(conn: Any, name: str, table: str, fields: Mapping[str, Any]) -> int:
    found = dbsearch.get_search(conn, name)
    if found is None:
        table_id = enqueueq.ensure_table(conn, table)
        return dbsearch.create_search(conn, name, {**fields, "table_id": table_id})
    differ = [k for k, v in fields.items() if found[k] != v]
    if found["table"] != table:
        differ.insert(0, "table")
    if differ:
        shown = ", ".join(f"{k} ({found[k] if k != 'table' else found['table']!r} there)"
                          if k != "space" else "space" for k in differ)
        raise UsageError(f"search {name!r} exists with other arguments: {shown}; give the "
                         "same arguments to continue it, or another --name")
    return found["id"]


class Driver:
    """One driver's loop over one search (it holds the search's lock)."""

    def __init__(self, store: Any, lock: dbsearch.SearchLock, name: str, search_id: int,
                 space: Space, *, table: str, fields: Mapping[str, Any], seed: int | None,
                 max_attempts: int, policy: Mapping[str, Any] | None,
                 say: Callable[[str], None]) -> None:
        self.store, self.lock, self.name, self.search_id = store, lock, name, search_id
        self.table, self.experiment = table, fields["experiment"]
        self.objective = fields["objective"]
        self.prune_on = json.loads(fields["options"])["prune_on"]
        self.budget, self.max_pending = fields["budget"], fields["max_pending"]
        self.pruning = fields["pruner"] != "none"
        self.max_attempts, self.policy, self.say = max_attempts, policy, say
        self.fields, self.seed = fields, seed
        self.mirror: studymod.StudyMirror | None = None
        self.space = space
        self.pending: dict[int, int] = {}  # job id -> trial number
        self.trials: dict[int, tuple[int, dict[str, Any]]] = {}  # number -> (job id, params)
        self.prune_asked: set[int] = set()
        self.total = 0
        self.counts = {"done": 0, "failed": 0, "pruned": 0}

    def _rebuild(self) -> None:
        rows = self.store.transaction(lambda c: dbsearch.trials(c, self.search_id))
        seed = self.seed
        if seed is not None and rows:
            # A seeded sampler made afresh would draw its first points again (TPE's first
            # trials are random): a restart draws from a seed of its own, still reproducible.
            seed = int.from_bytes(hashlib.blake2b(f"{seed}:{len(rows)}".encode(),
                                                  digest_size=4).digest(), "big")
        f = self.fields
        self.mirror = studymod.StudyMirror(
            self.name, self.space, studymod.make_sampler(f["sampler"], self.space, seed),
            studymod.make_pruner(f["pruner"]), f["direction"])
        curves = self._curves([r.job_id for r in rows])
        for expected, row in enumerate(rows):
            if row.trial != expected:  # numbers are 0.. with no gap: one writer at a time
                raise DbdictError(f"search {self.name!r}: trial {row.trial} found where "
                                  f"{expected} was expected (damaged search)")
            self.mirror.add(row, self.objective, curves.get(row.job_id, {}))
            self.trials[row.trial] = (row.job_id, self.space.params_in(row.state))
            if studymod.is_pending(row.status):
                self.pending[row.job_id] = row.trial
            else:
                self._count(studymod.outcome(row, self.objective, {})[0])
        self.total = len(rows)
        if rows:
            self.say(f"search {self.name}: continuing with {self.total} trials "
                     f"({len(self.pending)} pending)")

    def _curves(self, job_ids: list[int]) -> dict[int, dict[int, float]]:
        if not self.pruning or not job_ids:
            return {}
        return self.store.transaction(
            lambda c: dbsearch.intermediate_values(c, job_ids, self.prune_on))

    def _count(self, state: Any) -> None:
        TS = studymod.TrialState
        key = {TS.COMPLETE: "done", TS.PRUNED: "pruned"}.get(state, "failed")
        self.counts[key] += 1

    def loop(self, poll: float) -> Outcome:
        """Until the budget is spent and no trial is pending; the best trial."""
        self._rebuild()
        while True:
            if not self.lock.check():
                raise DbdictError(f"search {self.name!r}: lost the driver's lock (the "
                                  "database connection dropped); run the command again")
            self._collect()
            if self.pruning:
                self._prune()
            while self.total < self.budget and len(self.pending) < self.max_pending:
                self._enqueue_next()
            if self.total >= self.budget and not self.pending:
                break
            time.sleep(poll)
        self.store.transaction(lambda c: dbsearch.set_finished(c, self.search_id, True))
        return Outcome(self.name, self.best(), {**self.counts, "pending": 0,
                                                 "budget": self.budget})

    def _collect(self) -> None:
        if not self.pending:
            return
        ids = list(self.pending)
        rows = self.store.transaction(lambda c: dbsearch.trials(c, self.search_id, job_ids=ids))
        ended = [r for r in rows if not studymod.is_pending(r.status)]
        curves = self._curves([r.job_id for r in ended])
        for row in ended:
            state = self.mirror.tell(row, self.objective, curves.get(row.job_id, {}))
            del self.pending[row.job_id]
            self._count(state)
            value = studymod.objective_value(row.state, self.objective)
            shown = f" {self.objective}={value:.6g}" if value is not None else ""
            best = self.best()
            best_text = (f"best {best['value']:.6g} (trial {best['trial']})" if best
                         else "no best yet")
            self.say(f"trial {row.trial} (job {row.job_id}) {row.status.name}{shown} | "
                     f"{best_text} | {self.counts['done']} done, {self.counts['failed']} "
                     f"failed, {self.counts['pruned']} pruned, {len(self.pending)} pending "
                     f"of {self.budget}")

    def _prune(self) -> None:
        running = {j: n for j, n in self.pending.items() if j not in self.prune_asked}
        if not running:
            return
        curves = self._curves(list(running))
        stop = [j for j, n in running.items() if self.mirror.should_prune(n, curves.get(j, {}))]
        if not stop:
            return
        asked = self.store.request_prune(stop, reason="pruned by its search's pruner")
        self.prune_asked.update(stop)
        for j in asked:
            self.say(f"trial {running[j]} (job {j}): pruning requested")

    def _enqueue_next(self) -> None:
        number, flat = self.mirror.ask()
        flat = statemod.flatten(flat)
        statemod.check_user_keys(flat)
        h = statemod.param_hash(flat, checked=True)
        job_id, stored = self.store.transaction(lambda c: dbsearch.enqueue_trial(
            c, search_id=self.search_id, table=self.table, experiment=self.experiment,
            flat=flat, params_hash=h, max_attempts=self.max_attempts, policy=self.policy))
        if stored != number:  # only one driver acts, so this means a damaged search
            raise DbdictError(f"search {self.name!r}: trial {number} was stored as {stored}")
        self.pending[job_id] = number
        self.trials[number] = (job_id, flat)
        self.total += 1

    def best(self) -> dict[str, Any] | None:
        """The best completed trial: trial, value, params (None if none completed)."""
        try:
            t = self.mirror.study.best_trial
        except ValueError:
            return None
        job_id, params = self.trials[t.number]
        return {"trial": t.number, "job_id": job_id, "value": t.value, "params": params}
