"""Admission of calls: run now, wait for the worker to be ready, or fail fast. Pure.

    admit(phase, next_retry_at, now, deadline, startup_s) -> Go | Wait | Refuse

Callers do not see restarts: a call that arrives while the worker is starting (or about to
start), or while a restart is due early enough that the worker can be ready before the call's
deadline, waits. Only a worker that cannot be ready in time is refused at once, with the time
after which a retry makes sense (503 + Retry-After). `startup_s` is the actor's estimate of how
long a start takes (measured).
"""

from __future__ import annotations

import msgspec

from .policy import Phase

WAITABLE = (Phase.IDLE, Phase.STARTING, Phase.RESTARTING)


class Go(msgspec.Struct, frozen=True):
    pass


class Wait(msgspec.Struct, frozen=True):
    pass


class Refuse(msgspec.Struct, frozen=True):
    retry_after_s: float | None = None  # None: no restart is scheduled


Admission = Go | Wait | Refuse


def admit(
    phase: Phase, next_retry_at: float | None, now: float, deadline: float, startup_s: float
) -> Admission:
    if phase is Phase.RUNNING:
        return Go()
    if phase in WAITABLE:
        return Wait()
    if phase is Phase.BACKOFF:
        ready_at = max(now, next_retry_at if next_retry_at is not None else now) + startup_s
        return Wait() if ready_at <= deadline else Refuse(ready_at - now)
    return Refuse()  # STOPPING, STOPPED, QUARANTINED: nothing will make it ready
