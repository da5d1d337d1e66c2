"""The egress lane's records: each plugin's operator grants and its count of refused requests.

One row per plugin that has grants or refusals (none: no grants, no refusals). The row goes
with the plugin (ON DELETE CASCADE), so an uninstall forgets its grants; an upgrade keeps them.
The grants are stored as checked canonical text (lanes/egress_policy.py `parse_grants`); the
proxy reads them on every request, so a change takes effect at once.
"""

from __future__ import annotations

import json
import time

import msgspec

from ..db import Database


class EgressRow(msgspec.Struct, frozen=True):
    plugin_key: str
    hosts: list[str]
    refusals: int
    last_refused_at: float | None
    updated_at: float | None  # of the grants; None: never granted
    updated_by: str


def get_egress(db: Database, plugin_key: str) -> EgressRow:
    """The plugin's egress record (an empty one when it has none)."""
    r = db.read_one("SELECT * FROM plugin_egress WHERE plugin_key = ?", (plugin_key,))
    if r is None:
        return EgressRow(plugin_key, [], 0, None, None, "")
    return EgressRow(
        r["plugin_key"],
        list(json.loads(r["hosts"])),
        r["refusals"],
        r["last_refused_at"],
        r["updated_at"],
        r["updated_by"],
    )


def egress_grants(db: Database, plugin_key: str) -> list[str]:
    """The hosts an operator granted the plugin (canonical text, in the order given)."""
    r = db.read_one("SELECT hosts FROM plugin_egress WHERE plugin_key = ?", (plugin_key,))
    return list(json.loads(r["hosts"])) if r else []


async def set_egress_grants(db: Database, plugin_key: str, hosts: list[str], actor: str) -> None:
    """Replace the plugin's grants (the plugin must exist: a foreign key)."""
    await db.execute(
        """INSERT INTO plugin_egress (plugin_key, hosts, updated_at, updated_by)
           VALUES (?, ?, ?, ?)
           ON CONFLICT (plugin_key) DO UPDATE SET hosts = excluded.hosts,
             updated_at = excluded.updated_at, updated_by = excluded.updated_by""",
        (plugin_key, json.dumps(hosts), time.time(), actor),
    )


def count_egress_refusals(db: Database, plugin_key: str, n: int = 1) -> None:
    """Add `n` refused requests to the plugin's count (deferred; nothing for an unknown
    plugin)."""
    now = time.time()
    db.defer(
        """INSERT INTO plugin_egress (plugin_key, refusals, last_refused_at)
           SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM enhanced_plugins WHERE key = ?)
           ON CONFLICT (plugin_key) DO UPDATE SET refusals = refusals + excluded.refusals,
             last_refused_at = excluded.last_refused_at""",
        (plugin_key, n, now, plugin_key),
    )
