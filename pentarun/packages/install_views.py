"""What the plugin detail shows of its installs: the active one, an upgrade under way or the
last one tried, each with its state, step, pending approval, security rating and probation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ..config import Config
from ..store import records
from .devloop import is_dev_build
from .driver import job_of
from .pipeline import Job, Stage
from .rating import Rating

Rate = Callable[[records.InstallRow], Rating]
TERMINAL = {Stage.REJECTED}  # an upgrade that ended here is shown as `last_upgrade`


def describe_installs(rows: list[records.InstallRow], config: Config, rate: Rate) -> dict[str, Any]:
    """`install` (the active one, else the latest), and `upgrade` while a newer one is on its
    way or `last_upgrade` once it settled without going live."""
    if not rows:
        return {}
    active = next((r for r in rows if r.active), None)
    latest = rows[-1]
    out: dict[str, Any] = {"install": install_view(active or latest, config, rate)}
    if active is not None and latest is not active and job_of(latest).stage not in TERMINAL:
        out["upgrade"] = install_view(latest, config, rate)
    elif active is not None and latest is not active:
        out["last_upgrade"] = install_view(latest, config, rate)
    return out


def install_view(row: records.InstallRow, config: Config, rate: Rate) -> dict[str, Any]:
    """One install; `security_rating` (what this version would hold) sits beside
    `pending_approval`, never in it: the approval digest covers what the package asks, while
    the rating moves with the server's sandbox setting and the operator's grants."""
    job = job_of(row)
    pending = row.approval if job.stage is Stage.DEPENDENCIES_PENDING else None
    return {
        "id": row.id,
        "version": row.version,
        "state": job.stage.value,
        "reason": job.reason,
        "step": job.running or None,
        "active": row.active,
        "dev_build": is_dev_build(row.version),
        "pending_approval": None if pending is None else msgspec.to_builtins(pending),
        "security_rating": msgspec.to_builtins(rate(row)),
        "probation": probation_view(job, config),
        "last_run_id": row.last_run_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def probation_view(job: Job, config: Config) -> dict[str, Any] | None:
    if job.probation_due_at is None and not job.on_probation:
        return None
    return {
        "next_attempt_at": job.probation_due_at,
        "attempts_made": job.probation_attempts,
        "attempts_allowed": config.supervisor.probation_attempts,
        "running": job.on_probation,
    }
