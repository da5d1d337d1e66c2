"""Does the worker implement what its manifest declares? Pure.

Two views of the same question:
- `missing_from_hello`: what a running worker's Hello (its handlers, hooks, events) lacks of
  the manifest's handlers, hooks and event subscriptions. The self gate fails on any.
- `static_warnings`: for `pentarun plugin validate`, which cannot run the worker: a declared
  name that does not appear as a string literal in `worker/plugin_worker.py`. These are
  warnings, not problems, because handlers may be registered under computed names; the self
  gate (`plugin test`, and every install) is where a missing handler fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .manifest import Manifest
from .problems import Problem

ENTRYPOINT = "worker/plugin_worker.py"
HOOK_PREFIX = "hook:"  # the SDK registers `@plugin.hook(name)` as handler "hook:<name>"


def _declared(manifest: Manifest) -> list[tuple[str, str]]:
    """(kind, name) of everything the worker must implement."""
    return [
        *(("handler", name) for name in manifest.handlers),
        *(("hook", name) for name in manifest.hooks),
        *(("event subscription", name) for name in manifest.events.subscribe),
    ]


def missing_from_hello(
    manifest: Manifest, handlers: Iterable[str], hooks: Iterable[str], events: Iterable[str]
) -> list[str]:
    """Each declared name the worker did not announce, as "handler 'x'", in manifest order."""
    have_handlers, have_hooks, have_events = set(handlers), set(hooks), set(events)
    missing = []
    for kind, name in _declared(manifest):
        match kind:
            case "handler":
                ok = name in have_handlers
            case "hook":
                ok = name in have_hooks or HOOK_PREFIX + name in have_handlers
            case _:
                ok = name in have_events
        if not ok:
            missing.append(f"{kind} {name!r}")
    return missing


def static_warnings(manifest: Manifest, source: str) -> list[Problem]:
    """Declared names that do not appear as a string literal in the worker's source."""
    warnings = []
    for kind, name in _declared(manifest):
        literal = re.compile(r"""(['"])""" + re.escape(name) + r"\1")
        if not literal.search(source):
            warnings.append(
                Problem(
                    "worker.not_implemented",
                    ENTRYPOINT,
                    f"{kind} {name!r} is declared in definition.json but its name does not "
                    "appear in the worker; the self gate will fail if the worker lacks it",
                )
            )
    return warnings
