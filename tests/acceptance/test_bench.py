"""`dbdict-worker bench --quick` runs against a real PostgreSQL and cleans up after itself."""
from __future__ import annotations

import json

import pytest

from dbdict_worker.store import Store


@pytest.mark.slow
def test_quick_bench_prints_every_figure_and_leaves_nothing(pg_cli, pg_url):
    store = Store.open(pg_url)
    store.enqueue("user.exp", [{"mine": 1}], table="users_own")
    proc = pg_cli("dbdict-worker", "bench", "--db", pg_url, "--quick", "--json", timeout=600)
    figures = json.loads(proc.stdout)
    for name in ("enqueue_jobs_per_s", "bare_copy_jobs_per_s", "export_csv_s",
                 "bare_copy_out_s", "book_finish_4p_jobs_per_s",
                 "bare_book_finish_4p_jobs_per_s", "book_finish_4p_ratio",
                 "minimal_book_finish_4p_jobs_per_s", "end_to_end_2slots_jobs_per_s",
                 "bare_spawn_2x_per_s", "pickup_p50_ms", "pickup_p95_ms", "bare_spawn_ms",
                 # each goal's figure next to its peer (pgqueuer, in the test extra) or
                 # baseline from the same run, and their ratio
                 "queue_core_2c_jobs_per_s", "pgqueuer_2c_jobs_per_s", "queue_core_2c_ratio",
                 "queue_core_claim1_2c_jobs_per_s", "pgqueuer_batch1_2c_jobs_per_s",
                 "pgqueuer_enqueue_jobs_per_s", "enqueue_peer_ratio", "end_to_end_ratio"):
        assert figures[name] > 0, name
    # Only the user's own table and job are left.
    assert store.tables() == ["users_own"] and len(store.jobs()) == 1
    text = pg_cli("dbdict-worker", "bench", "--help").stdout
    assert "--quick" in text
    store.close()
