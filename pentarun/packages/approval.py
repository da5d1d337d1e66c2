"""What an operator must approve before a package installs, and the one digest they echo. Pure.

A package needs approval when it has requirements or asks for a scope above the auto-approve
level (admin-level scopes always do). The approval shows every requested scope with its level,
risk and whether it is one that needs approval, the requirement lines, the plugin's risk score,
the domains it may reach through the egress lane (`allowed_domains`), the resources it asks
for (memory, CPU, processes: what the kernel will hold it to) and the package it is about.
`digest` is the sha256 of the canonical JSON of everything else in the approval: it is the
only digest at the top level and the only value an operator echoes (the package's own hash
is `package.sha256`, nested so it cannot be mistaken for it).
The security rating (rating.py) is shown beside the approval, never in it: it moves with the
server's sandbox setting and the operator's egress grants, while what an operator approves
(and echoes) is only what the package asks for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from ..security.scopes import SCOPES, Level, needs_approval, risk_score
from ..security.signing import canonical_json

ECHO_HINT = "echo pending_approval.digest of GET /api/plugins/<key>"


class ScopeGrant(msgspec.Struct, frozen=True):
    scope: str
    level: str
    risk: int
    needs_approval: bool = True  # approvals stored before this field only listed these


class PackageRef(msgspec.Struct, frozen=True):
    key: str = ""
    version: str = ""
    sha256: str = ""  # of the uploaded zip; not what an operator echoes


class ResourceRequest(msgspec.Struct, frozen=True):
    memory_limit_mb: int
    cpu_limit: float
    max_processes: int


class Approval(msgspec.Struct, frozen=True):
    digest: str
    requirements: list[str] = []
    scopes: list[ScopeGrant] = []
    risk_score: int = 0
    package: PackageRef = PackageRef()
    # approvals stored before these fields have none (their digest was taken without them)
    allowed_domains: list[str] = []
    resources: ResourceRequest | None = None


def scope_grants(scopes: Iterable[str], auto_approve: Level) -> list[ScopeGrant]:
    """Every requested scope, in the manifest's order, with level, risk and approval need."""
    grants = []
    for name in dict.fromkeys(scopes):
        scope = SCOPES[name]
        grants.append(
            ScopeGrant(
                name, scope.level.name.lower(), scope.risk, needs_approval(name, auto_approve)
            )
        )
    return grants


def digest_of(approval: Approval) -> str:
    """sha256 of the canonical JSON of the approval without its `digest`."""
    body = msgspec.to_builtins(approval)
    body.pop("digest", None)
    return hashlib.sha256(canonical_json(body)).hexdigest()


def approval_for(
    *,
    key: str,
    version: str,
    package_sha256: str,
    scopes: list[str],
    requirements: list[str],
    auto_approve: Level,
    allowed_domains: list[str] | None = None,
    resources: ResourceRequest | None = None,
) -> Approval | None:
    """What needs an operator's approval, with its digest; None when nothing does."""
    grants = scope_grants(scopes, auto_approve)
    if not requirements and not any(g.needs_approval for g in grants):
        return None
    unsigned = Approval(
        digest="",
        requirements=list(requirements),
        scopes=grants,
        risk_score=risk_score(scopes),
        package=PackageRef(key, version, package_sha256),
        allowed_domains=list(dict.fromkeys(allowed_domains or [])),
        resources=resources,
    )
    return msgspec.structs.replace(unsigned, digest=digest_of(unsigned))


def wrong_digest_message(echoed: str, approval: Approval) -> str:
    """Why an echoed digest was refused, pointing at the right field."""
    if echoed == approval.package.sha256:
        return "that is the package's sha256, not the approval digest; " + ECHO_HINT
    return "the digest does not match what needs approval; " + ECHO_HINT
