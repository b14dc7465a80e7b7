"""The bench's table: each figure next to its peer or baseline from the same run, their
ratio and the goal."""
from __future__ import annotations

from dbdict_worker.bench import frames as benchframes
from dbdict_worker.bench import reads as benchreads

#: Jobs a queue-core consumer claims at once: a worker's free slots. Ten is also
#: pgqueuer's default batch size, so the two are compared claim for claim.
CLAIM = 10


def _ratio(f: dict[str, float], key: str) -> str:
    return f"{f[key]:.2f}x" if key in f else "n/a"


def format_table(figures: dict[str, float], *, sizes: dict[str, int], procs: list[int],
                 consumers: list[int] = (), history: int = 0) -> list[str]:
    """The figures as the lines of a table: each next to its peer or baseline from the same
    run, their ratio and the goal."""
    f = figures
    missing = "pgqueuer not installed"
    rows = [("figure", "dbdict-worker", "peer or baseline (same run)", "ratio", "goal")]
    for c in consumers:
        k = f"{c}c"
        rows.append((f"queue core {sizes['core']} no-op jobs, {c} consumer(s), claims of "
                     f"{CLAIM} (jobs/s)", f"{f[f'queue_core_{k}_jobs_per_s']:.0f}",
                     f"pgqueuer default {f[f'pgqueuer_{k}_jobs_per_s']:.0f}"
                     if f"pgqueuer_{k}_jobs_per_s" in f else missing,
                     _ratio(f, f"queue_core_{k}_ratio"), ">= 1.0x"))
        claim1 = f[f"queue_core_claim1_{k}_jobs_per_s"]
        peer1 = f.get(f"pgqueuer_batch1_{k}_jobs_per_s")
        rows.append(("  same, claims of 1", f"{claim1:.0f}",
                     f"pgqueuer batch 1 {peer1:.0f}" if peer1 else missing,
                     f"{claim1 / peer1:.2f}x" if peer1 else "n/a", ""))
    rows.append((f"enqueue {sizes['enqueue']} x 10 params (jobs/s)",
                 f"{f['enqueue_jobs_per_s']:.0f}",
                 (f"pgqueuer batch enqueue {f['pgqueuer_enqueue_jobs_per_s']:.0f}; "
                  if "pgqueuer_enqueue_jobs_per_s" in f else "")
                 + f"bare COPY {f['bare_copy_jobs_per_s']:.0f}",
                 _ratio(f, "enqueue_peer_ratio"), ">= 1.0x pgqueuer"))
    if sizes.get("scale"):
        rows.append((f"enqueue {sizes['scale']} x 10 params (jobs/s)",
                     f"{f['scale_enqueue_jobs_per_s']:.0f}",
                     f"{sizes['enqueue']} jobs {f['enqueue_jobs_per_s']:.0f}",
                     _ratio(f, "scale_enqueue_ratio"), ">= 0.8x"))
        rows += benchreads.table_rows({k[len("scale_"):]: v for k, v in f.items()
                                       if k.startswith("scale_")}, sizes["scale"])
    rows.append((f"end to end {sizes['e2e']} no-op jobs, worker with 2 slots (jobs/s)",
                 f"{f['end_to_end_2slots_jobs_per_s']:.1f}",
                 f"bare python -c pass x2 {f['bare_spawn_2x_per_s']:.1f}",
                 _ratio(f, "end_to_end_ratio"), ">= 1.7x"))
    for p in procs:
        rows.append((f"book 1 + finish 1, {sizes['book']} jobs, {p} procs (jobs/s)",
                     f"{f[f'book_finish_{p}p_jobs_per_s']:.0f}",
                     f"same SQL bare {f[f'bare_book_finish_{p}p_jobs_per_s']:.0f}; minimal "
                     f"queue {f[f'minimal_book_finish_{p}p_jobs_per_s']:.0f}",
                     f"{f[f'book_finish_{p}p_ratio']:.2f}x", ">= 0.6x" if p == 4 else ""))
    rows += [
        (f"export {sizes['enqueue']} x 10 keys to CSV (s)", f"{f['export_csv_s']:.2f}",
         f"bare COPY of the rows out {f['bare_copy_out_s']:.2f} s",
         f"{f['bare_copy_out_s'] / f['export_csv_s']:.2f}x", ""),
        (f"end to end {sizes['e2e']} jobs printing a line, log capture on / off (jobs/s)",
         f"{f['end_to_end_logs_on_jobs_per_s']:.1f}",
         f"off {f['end_to_end_logs_off_jobs_per_s']:.1f} (medians of 3, interleaved)",
         f"{f['log_capture_ratio']:.2f}x", ">= 0.9x"),
        ("pickup latency p50 / p95 (ms)",
         f"{f['pickup_p50_ms']:.0f} / {f['pickup_p95_ms']:.0f}",
         f"bare python -c pass {f['bare_spawn_ms']:.0f} ms", "", "p50 <= 50"),
    ]
    if "dataframe_ratio" in f:
        label, value, baseline, goal = benchframes.table_row(f, sizes["enqueue"])
        rows.append((label, value, baseline, "", goal))
    if history:
        rows.append((f"book+finish, {history} DONE in table (jobs/s)",
                     f"{f['book_finish_with_history_jobs_per_s']:.0f}",
                     f"same table empty {f['book_finish_empty_jobs_per_s']:.0f}; ready index: "
                     f"{bool(f['history_plan_uses_ready_index'])}",
                     f"{f['book_finish_with_history_jobs_per_s'] / f['book_finish_empty_jobs_per_s']:.2f}x",
                     ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(f"{cell:<{w}}" if i != 1 else f"{cell:>{w}}"
                      for i, (cell, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
