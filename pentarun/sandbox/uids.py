"""One unprivileged uid per plugin, never shared (Android's per-app uid).

    uids = UidTable(data_dir / "sandbox-uids.json", base)
    uids.uid_of(key)   -> the plugin's uid, assigned at its first start, kept for good

A plugin's uid starts from a hash of its key (`plugin_uid`: stable, spread over 65,536
uids), and moves to the next free uid when another plugin holds that one (`assign`, pure):
with 100 plugins two of them would share a hashed uid about one time in 13, so the hash alone
is not enough. Assignments are kept in a small JSON file of the data dir (written atomically),
because a plugin's /data belongs to its uid: the uid must not change between starts. The
sandbox's own short runs (reserved names) get uids the same way.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .profile import UID_SPAN, plugin_uid


class UidsExhausted(Exception):
    """Every uid of the span is taken (65,536 plugins)."""


def assign(taken: dict[str, int], key: str, base: int) -> int:
    """`key`'s uid: the one it holds, else the first free one from its hash on (wrapping
    within the span). Pure; `taken` is not changed."""
    if key in taken:
        return taken[key]
    used = set(taken.values())
    first = plugin_uid(key, base) - base
    for step in range(UID_SPAN):
        uid = base + (first + step) % UID_SPAN
        if uid not in used:
            return uid
    raise UidsExhausted(f"all {UID_SPAN} sandbox uids from {base} are taken")


class UidTable:
    """The assignments of one data dir; safe to use from several threads."""

    def __init__(self, path: Path, base: int) -> None:
        self.path = path
        self.base = base
        self._lock = threading.Lock()
        self._taken: dict[str, int] | None = None

    def uid_of(self, key: str) -> int:
        """The plugin's uid, assigned (and written down) at the first ask. Blocking."""
        with self._lock:
            taken = self._load()
            if key not in taken:
                taken[key] = assign(taken, key, self.base)
                self._save(taken)
            return taken[key]

    def _load(self) -> dict[str, int]:
        if self._taken is None:
            try:
                raw = json.loads(self.path.read_text())
            except FileNotFoundError:
                raw = {}
            in_span = range(self.base, self.base + UID_SPAN)
            self._taken = {str(k): v for k, v in raw.items() if isinstance(v, int) and v in in_span}
        return self._taken

    def _save(self, taken: dict[str, int]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(taken, indent=1, sort_keys=True) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)
