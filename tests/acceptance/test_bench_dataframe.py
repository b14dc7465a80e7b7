"""`dbdict-worker bench --only dataframe` measures Store.dataframe next to the CSV export of
the same jobs, and cleans up after itself (at a tiny size: this checks it runs, not timings)."""
from __future__ import annotations

import json

from dbdict_worker.store import Store


def test_dataframe_bench_runs_and_leaves_nothing(pg_cli, pg_url):
    with Store.open(pg_url) as store:
        store.enqueue("user.exp", [{"mine": 1}], table="users_own")
    proc = pg_cli("dbdict-worker", "bench", "--db", pg_url, "--quick", "--only", "dataframe",
                  "--json", timeout=300)
    figures = json.loads(proc.stdout)
    assert set(figures) == {"dataframe_s", "dataframe_export_csv_s", "dataframe_ratio"}
    assert all(v > 0 for v in figures.values())
    assert figures["dataframe_ratio"] == figures["dataframe_s"] / figures["dataframe_export_csv_s"]
    table = pg_cli("dbdict-worker", "bench", "--db", pg_url, "--quick", "--only",
                   "dataframe").stdout
    assert table.startswith("Store.dataframe 5000 x 10 keys (s)") and "ratio < 2" in table
    with Store.open(pg_url) as store:  # only the user's own table and job are left
        assert store.tables() == ["users_own"] and len(store.jobs()) == 1
