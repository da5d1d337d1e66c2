import os

from pentarun.config import BenchConfig
from pentarun.supervisor.stats import CallStats, parse_proc_stat, tier


def test_summary_over_the_window():
    stats = CallStats()
    for i in range(100):
        stats.record(at=1000.0 + i * 0.1, seconds=(i + 1) / 1000, ok=i % 10 != 0)
    stats.record(at=0.0, seconds=9.0, ok=False)  # outside the window
    summary = stats.summary(now=1010.0, window_s=60)
    assert summary["calls"] == 100
    assert summary["p50_ms"] == 51.0 and summary["p99_ms"] == 100.0
    assert summary["error_rate"] == 0.1
    assert stats.total == 101 and stats.failed == 11
    assert CallStats().summary(now=0)["p95_ms"] is None


def test_tiers():
    t = BenchConfig()
    assert tier(None, 0.0, t) is None
    assert tier(100, 0.0, t) == "platinum"
    assert tier(100, 0.005, t) == "gold"
    assert tier(700, 0.0, t) == "gold"
    assert tier(1500, 0.02, t) == "silver"
    assert tier(2500, 0.0, t) == "bronze"
    assert tier(100, 0.5, t) == "bronze"


def test_proc_stat_parsing_survives_odd_process_names():
    line = "1234 (weird ) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 1 0 1 1 1"
    assert parse_proc_stat(line) == (250 + 50) / os.sysconf("SC_CLK_TCK")
