"""A plugin's security rating, 1 to 6 (6 = safest), with a reason for every point. Pure.

In the manner of Home Assistant's app (add-on) ratings (supervisor `rating_security`): start
at a base of 5, add or take points for what the plugin holds, keep the result on the scale,
and let one condition override everything (HA: Docker API access = 1; here: no sandbox).

    security_rating(manifest, requirements, sandbox_on, egress_grants) -> Rating

| rule              | delta | when                                                              |
|-------------------|-------|-------------------------------------------------------------------|
| (base)            | 5     |                                                                   |
| `sandbox`         | 0     | sandbox on (listed so the operator sees it)                       |
| `least_privilege` | +1    | only read-level scopes, no egress, no grants, no requirements,    |
|                   |       | no listener: it can read its assigned properties and nothing more |
| `write_scopes`    | -1    | a write-level scope (it can change PentaVision data)              |
| `execute_scopes`  | -1    | an execute-level scope other than `proxy:egress` (rated as egress)|
| `admin_scopes`    | -2    | an admin-level scope                                              |
| `high_risk`       | -1    | the scopes' combined risk (SPEC §6, capped at 100) >= 60          |
| `egress`          | -1    | `proxy:egress` or `allowed_domains`: data can leave the host      |
| `egress_grants`   | -1    | an operator granted hosts (these may be private LAN addresses)    |
| `requirements`    | -1    | third-party code from requirements.txt                            |
| `listener`        | -1    | a listener: reachable from the network (through the core's port)  |
| `sensitive_data`  | -1    | traits `handles_pii`/`handles_phi` (or that classification)       |
| `floor`           | +n    | the penalties went below 1: the scale stops at 1                  |
| `sandbox`         | to 1  | `security.sandbox = "off"`: capped at 1, whatever else holds      |

Invariants (tested with hypothesis): the score is within 1..6; `base + sum(deltas) == score`;
adding a scope, a grant, a requirement, a listener or a sensitive-data trait, or turning the
sandbox off, never raises the score. An unsandboxed worker can step around every lane (read
the server's secrets, its database, other plugins), so nothing it declares can make it safer
than 1. The rating is an evaluation that moves with server settings and grants; it is never
part of the approval digest (see approval.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..security.scopes import MAX_RISK, SCOPES, Level, risk_score
from .manifest import Manifest

BASE = 5
LOWEST, HIGHEST = 1, 6
HIGH_RISK = 60  # combined scope risk at or above this costs a point
EGRESS_SCOPE = "proxy:egress"
SENSITIVE = {"handles_pii": "pii", "handles_phi": "phi"}  # trait -> data classification
SHOWN = 5  # names listed in one reason before "and N more"


class RatingReason(msgspec.Struct, frozen=True):
    delta: int  # points gained (+) or lost (-); 0: stated for the operator, costs nothing
    text: str
    rule: str  # stable name of the rule (the table above)


class Rating(msgspec.Struct, frozen=True):
    score: int
    reasons: list[RatingReason]
    base: int = BASE


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    more = len(names) - SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def security_rating(
    manifest: Manifest,
    requirements: Sequence[str] = (),
    sandbox_on: bool = True,
    egress_grants: Sequence[str] = (),
) -> Rating:
    """The rating of a plugin holding `manifest`'s scopes, listener, egress and traits, with
    these requirement lines and operator egress grants, on a server with the sandbox on/off."""
    scopes = [s for s in dict.fromkeys(manifest.scopes) if s in SCOPES]
    by_level: dict[Level, list[str]] = {}
    for name in scopes:
        by_level.setdefault(SCOPES[name].level, []).append(name)
    execute = [s for s in by_level.get(Level.EXECUTE, []) if s != EGRESS_SCOPE]
    domains = list(dict.fromkeys(manifest.allowed_domains))
    egress = EGRESS_SCOPE in scopes or bool(domains)
    grants = list(dict.fromkeys(egress_grants))
    listener = manifest.listener
    sensitive = sorted(
        {label for trait, label in SENSITIVE.items() if trait in manifest.traits}
        | {c for c in manifest.security.data_classification if c in SENSITIVE.values()}
    )
    risk = risk_score(scopes)

    reasons: list[RatingReason] = []

    def add(rule: str, delta: int, text: str) -> None:
        reasons.append(RatingReason(delta, text, rule))

    if sandbox_on:
        add("sandbox", 0, "runs in the sandbox: it reaches the core only through its lanes")
    above_read = any(level > Level.READ for level in by_level)
    if not (above_read or egress or grants or requirements or listener):
        add(
            "least_privilege",
            +1,
            "holds no more than read access to its assigned properties: no scope above read, "
            "no egress, no third-party code, no listener",
        )
    if Level.WRITE in by_level:
        names = _names(by_level[Level.WRITE])
        add("write_scopes", -1, f"can change PentaVision data (write-level scopes: {names})")
    if execute:
        add("execute_scopes", -1, f"can act through the core (execute-level: {_names(execute)})")
    if Level.ADMIN in by_level:
        add("admin_scopes", -2, f"holds admin-level scopes: {_names(by_level[Level.ADMIN])}")
    if risk >= HIGH_RISK:
        add("high_risk", -1, f"combined scope risk {risk}/{MAX_RISK} is high (>= {HIGH_RISK})")
    if egress:
        where = f"allowed_domains: {_names(domains)}" if domains else "no allowed_domains yet"
        add("egress", -1, f"can send data out of the host through the egress lane ({where})")
    if grants:
        add(
            "egress_grants",
            -1,
            f"an operator granted it {len(grants)} more host(s), private addresses "
            f"included: {_names(grants)}",
        )
    if requirements:
        add(
            "requirements",
            -1,
            f"runs third-party code from requirements.txt ({len(requirements)}: "
            f"{_names(list(requirements))})",
        )
    if listener is not None:
        add(
            "listener",
            -1,
            f"reachable from the network: listener {listener.name!r} on port {listener.port}",
        )
    if sensitive:
        add("sensitive_data", -1, f"handles sensitive data ({', '.join(sensitive)})")

    score = BASE + sum(r.delta for r in reasons)  # at most BASE + 1 = HIGHEST
    if score < LOWEST:
        add(
            "floor",
            LOWEST - score,
            f"the scale stops at {LOWEST}: penalties beyond it count no more",
        )
        score = LOWEST
    if not sandbox_on:
        reasons.insert(
            0,
            RatingReason(
                LOWEST - score,
                'security.sandbox is "off": the worker runs unconfined and can step around '
                "every lane (the server's secrets, its database, other plugins); rated "
                f"{LOWEST} whatever else it holds",
                "sandbox",
            ),
        )
        score = LOWEST
    return Rating(score, reasons)
