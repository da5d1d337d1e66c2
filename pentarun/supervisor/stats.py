"""Per-plugin performance: call latencies and outcomes, worker CPU and memory, the tier.

`CallStats` keeps the last calls in a bounded ring; `summary()` gives percentiles, error rate
and throughput over a window. `process_usage()` reads /proc. `tier()` is pure.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass

from ..config import BenchConfig

TIERS = ("platinum", "gold", "silver", "bronze")


def tier(p95_ms: float | None, error_rate: float, t: BenchConfig) -> str | None:
    """platinum, gold or silver when p95 and error rate are both under its limits; else bronze."""
    if p95_ms is None:
        return None
    for name, limit_ms, limit_errors in (
        ("platinum", t.platinum_p95_ms, t.platinum_error_rate),
        ("gold", t.gold_p95_ms, t.gold_error_rate),
        ("silver", t.silver_p95_ms, t.silver_error_rate),
    ):
        if p95_ms < limit_ms and error_rate < limit_errors:
            return name
    return "bronze"


@dataclass
class CallStats:
    keep: int = 2000

    def __post_init__(self) -> None:
        self.calls: collections.deque[tuple[float, float, bool]] = collections.deque(
            maxlen=self.keep
        )
        self.total = 0
        self.failed = 0

    def record(self, at: float, seconds: float, ok: bool) -> None:
        self.calls.append((at, seconds, ok))
        self.total += 1
        self.failed += 0 if ok else 1

    def summary(self, now: float, window_s: float = 60.0) -> dict[str, float | None]:
        recent = [(s, ok) for at, s, ok in self.calls if now - at <= window_s]
        latencies = sorted(s * 1000 for s, _ in recent)

        def pct(q: float) -> float | None:
            return (
                latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None
            )

        errors = sum(1 for _, ok in recent if not ok)
        return {
            "calls": float(len(recent)),
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "error_rate": errors / len(recent) if recent else 0.0,
            "throughput_per_s": len(recent) / window_s,
        }


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def parse_proc_stat(text: str) -> float:
    """CPU seconds (user + system) from /proc/<pid>/stat."""
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def process_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/statm") as statm:
            return parse_proc_stat(stat.read()), int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None
