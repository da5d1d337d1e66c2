"""What an actor remembers about its worker: log lines, the last exit and call, usage.

The log window bounds what a flooding worker can make the supervisor keep: at most
`records_per_s` records a second are kept, the rest are counted and reported as one line.
Evidence (last exit, last log lines, last call) is what a quarantine records.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from .events import Evidence
from .stats import CallStats

EVIDENCE_LINES = 20


@dataclass
class LogLine:
    at: float
    level: str
    logger: str
    message: str


class Telemetry:
    def __init__(self, lines_kept: int, records_per_s: int) -> None:
        self.logs: collections.deque[LogLine] = collections.deque(maxlen=lines_kept)
        self.records_per_s = records_per_s
        self.stats = CallStats()
        self.outgoing = CallStats()  # its calls to other plugins (lanes/plugins.py)
        self.last_exit = ""
        self._last_call: tuple[str, str, float] | None = None  # handler, property, wall time
        self._window = 0.0
        self._in_window = 0
        self._dropped = 0
        self._cpu_sample: tuple[float, float] | None = None  # (monotonic time, CPU seconds)

    def add_log(self, level: str, logger: str, message: str) -> None:
        self.logs.append(LogLine(time.time(), level, logger, message))

    def admit_record(self, now: float) -> bool:
        """Whether a worker's log record arriving at `now` (monotonic) is kept."""
        if now - self._window >= 1.0:
            if self._dropped:
                self.add_log(
                    "WARNING",
                    "pentarun.supervisor",
                    f"{self._dropped} log records dropped (over {self.records_per_s}/s)",
                )
            self._window, self._in_window, self._dropped = now, 0, 0
        self._in_window += 1
        if self._in_window > self.records_per_s:
            self._dropped += 1
            return False
        return True

    def note_call(self, handler: str, property_id: str) -> None:
        self._last_call = (handler, property_id, time.time())

    @property
    def last_call(self) -> dict[str, object]:
        if self._last_call is None:
            return {}
        handler, property_id, at = self._last_call
        return {"handler": handler, "property": property_id, "at": at}

    def evidence(self) -> Evidence:
        lines = [f"{ln.level} {ln.logger}: {ln.message}" for ln in self.logs]
        return Evidence(self.last_exit, lines[-EVIDENCE_LINES:], self.last_call)

    def usage(self, sample: tuple[float, int] | None) -> dict[str, float | None]:
        """CPU use since the last look (percent of one core) and memory, from a sample of
        (CPU seconds, bytes) of the worker (its cgroup, or its process)."""
        if sample is None:
            self._cpu_sample = None
            return {"cpu_percent": None, "memory_mb": None, "cpu_seconds": None}
        cpu, rss = sample
        now = time.monotonic()
        percent = None
        if self._cpu_sample is not None and now > self._cpu_sample[0]:
            percent = 100 * (cpu - self._cpu_sample[1]) / (now - self._cpu_sample[0])
        self._cpu_sample = (now, cpu)
        return {"cpu_percent": percent, "memory_mb": rss / 2**20, "cpu_seconds": cpu}
