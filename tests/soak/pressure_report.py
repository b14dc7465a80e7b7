"""The figures of a pressure scenario (:mod:`tests.soak.pressure`) and its table row."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from tests.soak import checks


@dataclasses.dataclass
class Phase:
    """Throughput and booking latency of one phase."""

    seconds: float = 0.0
    done: int = 0
    bookings: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def jobs_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclasses.dataclass
class PressureReport:
    """The figures of one scenario, and the checks that failed (``ok`` when none)."""

    scenario: str
    seed: int
    pressure_s: float
    phases: dict[str, Phase] = dataclasses.field(default_factory=dict)
    enqueued: int = 0
    enqueue_errors: int = 0
    lost: int = 0
    duplicated: int = 0
    backlog_at_end: int = 0  # ready jobs when the pressure ended
    recovered_after_s: float | None = None  # until the ready backlog was back to its level
    dead_tuples: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    verdict: checks.Verdict = dataclasses.field(default_factory=checks.Verdict)
    orphans: list[str] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    run_dir: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.verdict.problems

    def recovery(self) -> float | None:
        """Throughput after the pressure over throughput before it."""
        before, after = self.phases.get("before"), self.phases.get("after")
        if not before or not after or before.jobs_per_s == 0:
            return None
        return after.jobs_per_s / before.jobs_per_s

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        return out


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return round(1000 * sorted_values[k], 1)


HEADER = (f"{'scenario':<11} {'pressure':>8}  {'jobs/s before/during/after':<27} "
          f"{'booking p50 ms b/d/a':<22} {'booking p95 ms b/d/a':<22} {'lost':>4} {'dup':>4}"
          "  notes")


def table_row(r: PressureReport) -> str:
    """One line of the table (:data:`HEADER`), then the notes and problems, indented."""
    ph = [r.phases.get(n, Phase()) for n in ("before", "during", "after")]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    rate = "/".join(f"{p.jobs_per_s:.1f}" for p in ph)
    p50 = "/".join(ms(p.p50_ms) for p in ph)
    p95 = "/".join(ms(p.p95_ms) for p in ph)
    rec = r.recovery()
    notes = [f"after/before {rec:.2f}" if rec is not None else "no recovery figure",
             f"backlog {r.backlog_at_end} at release, back to normal "
             + (f"{r.recovered_after_s:g} s later" if r.recovered_after_s is not None
                else "never in the after phase"),
             *r.notes,
             "dead tuples " + "; ".join(f"{when}: " + ", ".join(f"{k} {v}" for k, v in d.items())
                                        for when, d in r.dead_tuples.items()),
             f"{r.enqueued} jobs, {r.enqueue_errors} enqueue retries, "
             f"{len(r.orphans)} orphans, {r.verdict.history_errors} inconsistent histories",
             "OK" if r.ok else "FAILED"]
    line = (f"{r.scenario:<11} {r.pressure_s:>7.0f}s  {rate:<27} {p50:<22} {p95:<22} "
            f"{r.lost:>4} {r.duplicated:>4}")
    return "\n".join([line, *("      " + n for n in notes),
                      *("      ! " + p for p in r.failures + r.verdict.problems)])


__all__ = ["HEADER", "Phase", "PressureReport", "percentile", "table_row"]
