"""The scope table (SPEC §6): each scope's level and risk score, and the approval rule. Pure.

A plugin's risk is the sum of its scopes' risks, capped at 100. Scopes whose level is at or
below the configured auto-approve level are granted on their own; the others need an
operator's approval; admin-level scopes never auto-approve, whatever the configuration.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Level(enum.IntEnum):
    READ = 1
    WRITE = 2
    EXECUTE = 3
    ADMIN = 4

    @classmethod
    def parse(cls, name: str) -> Level:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown level {name!r}: read, write, execute or admin") from None


@dataclass(frozen=True)
class Scope:
    name: str
    level: Level
    risk: int
    description: str


SCOPES: Mapping[str, Scope] = {
    s.name: s
    for s in (
        Scope("properties:read", Level.READ, 5, "read the assigned properties"),
        Scope("cameras:read", Level.READ, 10, "list and read cameras of assigned properties"),
        Scope("cameras:write", Level.WRITE, 30, "change cameras of assigned properties"),
        Scope("streams:read", Level.READ, 15, "watch live streams and snapshots"),
        Scope("streams:write", Level.WRITE, 35, "start, stop and configure streams"),
        Scope("recordings:read", Level.READ, 20, "read recordings"),
        Scope("recordings:write", Level.WRITE, 40, "create and delete recordings"),
        Scope("storage:read", Level.READ, 10, "read PentaVision storage"),
        Scope("storage:write", Level.WRITE, 30, "write PentaVision storage"),
        Scope("events:publish", Level.WRITE, 20, "publish events on the event lane"),
        Scope("events:subscribe", Level.READ, 10, "receive events of assigned properties"),
        Scope("proxy:egress", Level.EXECUTE, 40, "fetch allowed external domains via the proxy"),
        Scope("plugins:call", Level.EXECUTE, 30, "call declared dependency plugins"),
    )
}

MAX_RISK = 100


def risk_score(scopes: Iterable[str], table: Mapping[str, Scope] = SCOPES) -> int:
    return min(MAX_RISK, sum(table[s].risk for s in set(scopes) if s in table))


def needs_approval(scope: str, auto_approve: Level, table: Mapping[str, Scope] = SCOPES) -> bool:
    level = table[scope].level
    return level is Level.ADMIN or level > auto_approve
