"""The search's acceptance figures (issue 13), on a real PostgreSQL with real workers.

    python -m tests.soak.search_figures [--dsn ADMIN_URL] [--part a,b,c] [--seeds 5]

(a) Branin and a 6-parameter quadratic with a categorical, 2 workers x 2 slots, budget 60,
    5 seeds: the median best value of TPE and of random search; jobs run == budget each time.
(b) kill -9 of the driver mid-search and a restart: exactly budget trials, none duplicated,
    the best value beside (a)'s uninterrupted TPE runs.
(c) pruning on a learning-curve task: ASHA vs no pruner, the share of trials pruned, the best
    final value, and the total steps run.

Each run gets a database of its own (created, then dropped).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from dbdict_worker.search import run
from dbdict_worker.store import Store

BIN = Path(sys.executable).parent
SYN = "dbdict_worker.search.synthetic"
SPACES = {
    "branin": {"x": {"type": "float", "low": -5, "high": 10},
               "y": {"type": "float", "low": 0, "high": 15}},
    "quad6": {**{f"p{i}": {"type": "float", "low": -2, "high": 2} for i in range(1, 7)},
              "kind": ["a", "b", "c"]},
    "curve": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
              "width": {"type": "int", "low": 8, "high": 512, "log": True},
              "steps": 30, "delay": 0.1},
}


class Bench:
    """A fresh database and two workers of two slots each."""

    def __init__(self, admin: str, workdir: Path) -> None:
        self.admin = sa.make_url(admin)
        self.name = f"dbdict_fig_{os.getpid()}_{int(time.time())}"
        self.engine = sa.create_engine(self.admin, isolation_level="AUTOCOMMIT")
        with self.engine.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        self.url = self.admin.set(database=self.name).render_as_string(hide_password=False)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
        self.env.update({"DBDICT_DB": self.url, "DBDICT_SAVE_INTERVAL": "0.2",
                         # metrics reach the driver within ~0.5 s of a report
                         "DBDICT_REPORT_INTERVAL": "0.05", "DBDICT_METRICS_INTERVAL": "0.3"})
        subprocess.run([str(BIN / "dbdict"), "db", "upgrade"], env=self.env, check=True,
                       capture_output=True)
        self.workdir = workdir
        self.workers = [subprocess.Popen(
            [str(BIN / "dbdict-worker"), "start", "--slots", "2", "--heartbeat", "0.5",
             "--lease", "5"], env=self.env, cwd=workdir,
            stdout=open(workdir / f"worker{i}.log", "w"), stderr=subprocess.STDOUT)
            for i in range(2)]
        self.store = Store.open(self.url)

    def close(self) -> None:
        for w in self.workers:
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            w.wait(60)
        self.store.close()
        with self.engine.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def jobs_run(self, table: str) -> int:
        if table not in self.store.tables():
            return 0
        return len(self.store.jobs(tables=table))


def search(bench: Bench, fn: str, sampler: str, seed: int, budget: int, *, pruner: str = "none",
           objective: str = "value") -> dict:
    name = f"{fn}-{sampler}-{pruner}-{seed}"
    t0 = time.monotonic()
    out = run(bench.store, f"{SYN}.{fn}", SPACES[fn], objective=objective, sampler=sampler,
              pruner=pruner, budget=budget, max_pending=4, seed=seed, table=name, name=name,
              poll=0.1)
    return {"name": name, "best": out.best["value"], "counts": out.counts,
            "jobs": bench.jobs_run(name), "seconds": round(time.monotonic() - t0, 1)}


def part_a(bench: Bench, seeds: int, budget: int) -> dict:
    res: dict = {}
    for fn in ("branin", "quad6"):
        for sampler in ("tpe", "random"):
            runs = [search(bench, fn, sampler, seed, budget) for seed in range(seeds)]
            for r in runs:
                print(f"  {r['name']}: best {r['best']:.5g}, jobs {r['jobs']}, "
                      f"{r['seconds']}s", flush=True)
            res[f"{fn}/{sampler}"] = {"median_best": statistics.median(r["best"] for r in runs),
                                      "bests": [r["best"] for r in runs],
                                      "jobs": [r["jobs"] for r in runs]}
            print(f"{fn} {sampler}: median best {res[f'{fn}/{sampler}']['median_best']:.5g}",
                  flush=True)
    return res


def part_b(bench: Bench, budget: int, seed: int = 100) -> dict:
    """kill -9 of a `dbdict search` subprocess after a third of the budget, then a restart."""
    name = f"killed-{seed}"
    space = bench.workdir / "branin.toml"
    space.write_text('x = {type = "float", low = -5, high = 10}\n'
                     'y = {type = "float", low = 0, high = 15}\n'
                     'delay = 0.2\n')  # slow enough to kill the driver mid-search
    args = [str(BIN / "dbdict"), "search", f"{SYN}.branin", "--space", str(space),
            "--objective", "value", "--budget", str(budget), "--max-pending", "4", "--seed",
            str(seed), "--name", name, "--table", name, "--poll", "0.1"]
    first = subprocess.Popen(args, env=bench.env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while bench.jobs_run(name) < budget // 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = bench.jobs_run(name)
    second = subprocess.run(args, env=bench.env, capture_output=True, text=True)
    trials = bench.store.jobs_with_state(tables=name)
    numbers = sorted(j.trial for j, _ in trials) if hasattr(trials[0][0], "trial") else None
    points = {(st["x"], st["y"]) for _, st in trials}
    best = min(st["value"] for j, st in trials if "value" in st)
    return {"killed_after_jobs": killed_at, "jobs": len(trials), "distinct_points": len(points),
            "trial_numbers_ok": numbers in (None, list(range(budget))),
            "restart_exit": second.returncode, "best": best,
            "last_line": second.stdout.strip().splitlines()[-1]}


def part_c(bench: Bench, budget: int, seeds: int, pruners: list[str]) -> dict:
    res: dict = {}
    for pruner in pruners:
        runs = []
        for seed in range(seeds):
            r = search(bench, "curve", "tpe", seed, budget, pruner=pruner, objective="loss")
            states = [st for _, st in bench.store.jobs_with_state(tables=r["name"])]
            r["steps_run"] = sum(int(st.get("steps_run", 0)) for st in states)
            r["stopped_early"] = sum(1 for st in states if int(st.get("steps_run", 0)) < 30)
            print(f"  {r['name']}: best {r['best']:.5g}, {r['counts']}, steps run "
                  f"{r['steps_run']}, stopped early {r['stopped_early']}, {r['seconds']}s",
                  flush=True)
            runs.append(r)
        res[pruner] = {"best": [r["best"] for r in runs], "steps": [r["steps_run"] for r in runs],
                       "pruned": [r["counts"]["pruned"] for r in runs],
                       "stopped_early": [r["stopped_early"] for r in runs]}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--part", default="a,b,c")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--curve-budget", type=int, default=40)
    ap.add_argument("--curve-seeds", type=int, default=3)
    ap.add_argument("--pruners", default="none,asha")
    a = ap.parse_args()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(a.dsn, Path(tmp))
        try:
            parts = a.part.split(",")
            if "a" in parts:
                out["a"] = part_a(bench, a.seeds, a.budget)
            if "b" in parts:
                out["b"] = part_b(bench, a.budget)
                print(f"b: {out['b']}", flush=True)
            if "c" in parts:
                out["c"] = part_c(bench, a.curve_budget, a.curve_seeds, a.pruners.split(","))
        finally:
            bench.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
