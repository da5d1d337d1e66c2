"""Plugins that depend on plugins: whether a dependent can work now, what an enable or an
uninstall must respect, and the timeline events when a dependency comes and goes (SPEC §7).

Pure: `statuses(deps, rows)`, `degraded_reason(statuses)`, `enable_blockers(...)`,
`dependents_of(key, rows)`. The shell (`Dependencies`) reads the plugin rows and watches the
store: every state change of a plugin re-judges the plugins that depend on it and records
`dependency_degraded` / `dependency_recovered` on their timelines when that changes.

Rules (decided; see README "Plugins that build on plugins"):
- A dependency is usable when it is installed, ENABLED, and its installed version is in the
  dependent's range. Otherwise the dependent is DEGRADED, with the reason naming the
  dependency (not installed, DISABLED, QUARANTINED with its reason, version out of range).
  DEGRADED is a condition shown beside the pipeline state (`degraded` in the list and the
  detail), not a pipeline state: the dependent keeps its worker, and its calls to the
  dependency fail with the dependency's own error until it is back. It recovers by itself.
- Enabling a dependent for a property *requires* each dependency to be enabled for that
  property first (409 dependency_not_enabled, naming them): nothing is enabled that the
  operator did not enable, and a plugin -> plugin call always runs for one property on both.
- Uninstalling a plugin others depend on is refused (409 has_dependents, naming them) unless
  forced; forcing disables each dependent with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec
import trio

from ..errors import DependencyNotEnabled
from ..store import records
from ..store.db import Database
from .versions import VersionError, parse_range, parse_version

ENABLED = "ENABLED"
DEGRADED, RECOVERED = "dependency_degraded", "dependency_recovered"
# the plugin events after which a plugin's record (state, version) may differ
PLUGIN_CHANGES = {"install_state", "uninstalled", "upgraded", "source_started"}
CHANGES_BUFFER = 256
SETTLE_S = 0.05


class DependencyStatus(msgspec.Struct, frozen=True):
    plugin: str
    range: str
    version: str | None  # installed version, None when not installed
    state: str | None
    ok: bool
    problem: str = ""


def _in_range(spec: str, version: str) -> bool:
    try:
        return parse_range(spec).admits(parse_version(version))
    except VersionError:
        return False


def statuses(
    deps: Mapping[str, str], rows: Mapping[str, records.PluginRow]
) -> list[DependencyStatus]:
    """Each dependency as it stands (rows: the installed plugins by key)."""
    out = []
    for key, spec in deps.items():
        row = rows.get(key)
        if row is None:
            out.append(DependencyStatus(key, spec, None, None, False, f"{key} is not installed"))
        elif not _in_range(spec, row.version):
            problem = f"{key} {row.version} is outside the range {spec}"
            out.append(DependencyStatus(key, spec, row.version, row.state, False, problem))
        elif row.state != ENABLED:
            why = f": {row.reason}" if row.reason else ""
            problem = f"{key} is {row.state}{why}"
            out.append(DependencyStatus(key, spec, row.version, row.state, False, problem))
        else:
            out.append(DependencyStatus(key, spec, row.version, row.state, True))
    return out


def degraded_reason(found: Sequence[DependencyStatus]) -> str:
    """Why a dependent cannot fully work ("" when every dependency is usable)."""
    problems = [s.problem for s in found if not s.ok]
    return "dependency " + "; ".join(problems) if problems else ""


def enable_blockers(
    deps: Iterable[str], assigned: Mapping[str, Iterable[str]], properties: Iterable[str]
) -> dict[str, list[str]]:
    """For each property to enable, the dependencies not enabled for it (empty: none)."""
    blockers: dict[str, list[str]] = {}
    for pid in properties:
        missing = [d for d in deps if pid not in set(assigned.get(d, ()))]
        if missing:
            blockers[pid] = missing
    return blockers


def dependents_of(key: str, rows: Iterable[records.PluginRow]) -> list[str]:
    """The installed plugins whose manifest depends on `key`."""
    return sorted(r.key for r in rows if r.manifest is not None and key in r.manifest.dependencies)


class Dependencies:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._degraded: dict[str, str] = {}  # dependent -> the reason last recorded
        self._send, self._changed = trio.open_memory_channel[str](CHANGES_BUFFER)
        self._overflowed = False  # more changes than the buffer: re-judge everyone next

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Re-judge dependents after their dependencies changed (what `observe` saw), once
        the change is in the store: a short settle, then every change seen so far at once."""
        self.db.observers.append(self.observe)
        task_status.started()
        try:
            async for first in self._changed:
                await trio.sleep(SETTLE_S)
                changed = {first}
                while True:
                    try:
                        changed.add(self._changed.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self.db.flush()
                if self._overflowed:
                    self._overflowed = False
                    changed |= set(self._rows())
                self.rejudge(changed)
        finally:
            self.db.observers.remove(self.observe)

    def _rows(self, keys: Iterable[str] | None = None) -> dict[str, records.PluginRow]:
        """The plugins' records by key: these `keys` (those found), or all of them."""
        if keys is None:
            return {r.key: r for r in records.list_plugins(self.db)}
        found = (records.get_plugin(self.db, k) for k in keys)
        return {r.key: r for r in found if r is not None}

    def status_of(self, row: records.PluginRow) -> tuple[list[DependencyStatus], str]:
        """The plugin's dependencies as they stand and its degraded reason ("" when none)."""
        if row.manifest is None or not row.manifest.dependencies:
            return [], ""
        found = statuses(row.manifest.dependencies, self._rows(row.manifest.dependencies))
        return found, degraded_reason(found)

    def check_enable(self, key: str, properties: Sequence[str]) -> None:
        """Conflict unless every dependency of `key` is enabled for each of `properties`."""
        row = records.get_plugin(self.db, key)
        deps = list(row.manifest.dependencies) if row and row.manifest else []
        if not deps:
            return
        assigned = {d: records.assigned_properties(self.db, d) for d in deps}
        rows = self._rows()
        disabled = [d for d in deps if d not in rows or rows[d].state != ENABLED]
        blockers = enable_blockers(deps, assigned, properties)
        if disabled or blockers:
            names = sorted(set(disabled) | {d for ds in blockers.values() for d in ds})
            raise DependencyNotEnabled(
                f"enable {', '.join(names)} for {', '.join(sorted(blockers) or properties)} "
                f"first: {key} depends on {'them' if len(names) > 1 else 'it'}",
                {"dependencies": names, "properties": blockers},
            )

    def dependents(self, key: str) -> list[str]:
        return dependents_of(key, self._rows().values())

    def observe(self, kind: str, fields: dict[str, object]) -> None:
        """Database observer: a plugin's record may have changed (its pipeline state, an
        uninstall, a start from source)."""
        if kind == "event" and fields.get("type") in PLUGIN_CHANGES:
            try:
                self._send.send_nowait(str(fields.get("plugin", "")))
            except trio.WouldBlock:  # a burst: the next round re-judges every plugin
                self._overflowed = True

    def rejudge(self, changed: Iterable[str]) -> None:
        """Record on each dependent's timeline when it became DEGRADED or recovered."""
        rows = self._rows()
        touched = sorted({d for key in changed for d in dependents_of(key, rows.values())})
        for dependent in touched:
            manifest = rows[dependent].manifest
            if manifest is None:
                continue
            reason = degraded_reason(statuses(manifest.dependencies, rows))
            if reason == self._degraded.get(dependent, ""):
                continue
            if reason:
                self._degraded[dependent] = reason
                records.record_event(self.db, dependent, DEGRADED, reason=reason)
            else:
                del self._degraded[dependent]
                back = ", ".join(sorted(manifest.dependencies))
                records.record_event(self.db, dependent, RECOVERED, reason=f"{back}: usable again")
