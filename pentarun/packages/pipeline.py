"""The install pipeline of one uploaded package: a pure state machine (SPEC §3).

    step(job, event) -> (job, commands)

UPLOADED -> VALIDATING -> [DEPENDENCIES_PENDING] -> INSTALLING -> TESTING -> INSTALLED
-> VERIFIED -> ENABLED <-> DISABLED; failures -> REJECTED; supervision -> QUARANTINED.

`Resume` is fed once per job after a server start: finished states stay, interrupted work is
run again from its start (staging is rebuilt from scratch), at most `MAX_RESUMES` times, after
which the job is REJECTED with the reason. Only VERIFIED or later can be enabled, so nothing
half-installed ever runs. A release from QUARANTINED re-runs the whole suite on the installed
copy; a failure there goes back to QUARANTINED, not REJECTED.
"""

from __future__ import annotations

import enum

import msgspec

MAX_RESUMES = 2


class Stage(enum.StrEnum):
    UPLOADED = "UPLOADED"
    VALIDATING = "VALIDATING"
    DEPENDENCIES_PENDING = "DEPENDENCIES_PENDING"
    INSTALLING = "INSTALLING"
    TESTING = "TESTING"
    INSTALLED = "INSTALLED"
    VERIFIED = "VERIFIED"
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    REJECTED = "REJECTED"
    QUARANTINED = "QUARANTINED"


WORKING = {Stage.VALIDATING, Stage.INSTALLING, Stage.TESTING, Stage.INSTALLED}
SERVABLE = {Stage.VERIFIED, Stage.ENABLED, Stage.DISABLED}


class Job(msgspec.Struct, frozen=True):
    stage: Stage = Stage.UPLOADED
    reason: str = ""
    running: str = ""  # the step under way: validate, install, test, promote, verify
    resumes: int = 0
    approval_digest: str | None = None  # what the operator must echo, while pending
    in_place: bool = False  # the tree is installed (a release re-tests it where it is)
    releasing: bool = False
    enable_when_verified: bool = False


# --- events ---------------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True):
    pass


class Begin(Event, frozen=True):
    pass


class Validated(Event, frozen=True):
    approval_digest: str | None = None  # set when operator approval is needed


class Approved(Event, frozen=True):
    digest: str


class OperatorRejected(Event, frozen=True):
    reason: str = "rejected by operator"


class StepDone(Event, frozen=True):
    """The running step (install, test, promote, verify) succeeded."""


class StepFailed(Event, frozen=True):
    reason: str


class Enable(Event, frozen=True):
    pass


class Disable(Event, frozen=True):
    reason: str = "disabled by operator"


class Quarantine(Event, frozen=True):
    reason: str


class Release(Event, frozen=True):
    pass


class Resume(Event, frozen=True):
    pass


# --- commands -------------------------------------------------------------------------------


class Command(msgspec.Struct, frozen=True):
    pass


class Run(Command, frozen=True):
    """Carry out a step: validate, install, test, promote, verify; then report StepDone/Failed."""

    step: str


class Refuse(Command, frozen=True):
    """The event is not acceptable now; tell the caller why (nothing changed)."""

    reason: str


class Activate(Command, frozen=True):
    """This job's version becomes the plugin's active version (replacing an older one)."""


class StartWorker(Command, frozen=True):
    pass


class StopWorker(Command, frozen=True):
    pass


class Discard(Command, frozen=True):
    """Remove the job's staging area (and its installed tree unless it is active)."""


def _to(
    job: Job, stage: Stage, reason: str, *commands: Command, **changes: object
) -> tuple[Job, list[Command]]:
    running = next((c.step for c in commands if isinstance(c, Run)), "")
    new = msgspec.structs.replace(job, stage=stage, reason=reason, running=running, **changes)
    return new, list(commands)


def step(job: Job, event: Event) -> tuple[Job, list[Command]]:
    s = job.stage
    match event:
        case Begin() if s is Stage.UPLOADED:
            return _to(job, Stage.VALIDATING, "validating package", Run("validate"))
        case Validated(approval_digest=None) if job.running == "validate":
            return _to(job, Stage.INSTALLING, "installing", Run("install"))
        case Validated(approval_digest=digest) if job.running == "validate":
            return _to(
                job,
                Stage.DEPENDENCIES_PENDING,
                "waiting for operator approval",
                approval_digest=digest,
            )
        case Approved(digest=digest) if s is Stage.DEPENDENCIES_PENDING:
            if digest != job.approval_digest:
                return job, [Refuse("the digest does not match what needs approval")]
            return _to(
                job, Stage.INSTALLING, "approved; installing", Run("install"), approval_digest=None
            )
        case OperatorRejected(reason=reason) if s is Stage.DEPENDENCIES_PENDING:
            return _to(job, Stage.REJECTED, reason, Discard(), approval_digest=None)
        case StepDone() if job.running:
            return _advance(job)
        case StepFailed(reason=reason) if job.running:
            if job.releasing:
                return _to(job, Stage.QUARANTINED, f"release failed: {reason}", releasing=False)
            return _to(job, Stage.REJECTED, reason, Discard())
        case Enable() if s in (Stage.VERIFIED, Stage.DISABLED):
            return _to(job, Stage.ENABLED, "enabled", StartWorker())
        case Enable() if job.running or s is Stage.DEPENDENCIES_PENDING:
            return msgspec.structs.replace(job, enable_when_verified=True), []
        case Enable() if s is not Stage.ENABLED:
            return job, [Refuse(f"a {s.value} plugin cannot be enabled")]
        case Disable(reason=reason) if s is Stage.ENABLED:
            return _to(job, Stage.DISABLED, reason, StopWorker())
        case Disable() if job.running or s is Stage.DEPENDENCIES_PENDING:
            return msgspec.structs.replace(job, enable_when_verified=False), []
        case Quarantine(reason=reason) if s in SERVABLE:
            return _to(job, Stage.QUARANTINED, reason, StopWorker())
        case Release() if s is Stage.QUARANTINED:
            return _to(
                job,
                Stage.TESTING,
                "release: running the full test suite",
                Run("test"),
                releasing=True,
            )
        case Release():
            return job, [
                Refuse(f"only a QUARANTINED plugin can be released, this one is {s.value}")
            ]
        case Resume():
            return _resume(job)
    return job, []


def _advance(job: Job) -> tuple[Job, list[Command]]:
    match job.running:
        case "install":
            return _to(job, Stage.TESTING, "running the test gates", Run("test"))
        case "test" if job.in_place:
            return _to(job, Stage.INSTALLED, "verifying the installed copy", Run("verify"))
        case "test":
            return _to(job, Stage.TESTING, "gates passed; moving into place", Run("promote"))
        case "promote":
            return _to(
                job, Stage.INSTALLED, "verifying the installed copy", Run("verify"), in_place=True
            )
        case "verify" if job.enable_when_verified and not job.releasing:
            return _to(
                job,
                Stage.ENABLED,
                "verified and enabled",
                Activate(),
                StartWorker(),
                enable_when_verified=False,
            )
        case "verify":
            reason = "verified; released" if job.releasing else "verified"
            return _to(
                job, Stage.VERIFIED, reason, Activate(), releasing=False, enable_when_verified=False
            )
    return job, []


def _resume(job: Job) -> tuple[Job, list[Command]]:
    s = job.stage
    if s in (Stage.UPLOADED, Stage.VALIDATING):
        return _to(job, Stage.VALIDATING, "validating package (resumed)", Run("validate"))
    if job.running:
        if job.resumes >= MAX_RESUMES:
            reason = f"interrupted {job.resumes + 1} times during {s.value} ({job.running})"
            if job.releasing:
                return _to(job, Stage.QUARANTINED, reason, releasing=False)
            return _to(job, Stage.REJECTED, reason, Discard())
        return _to(
            job,
            s,
            f"{job.reason} (resumed after restart)",
            Run(job.running),
            resumes=job.resumes + 1,
        )
    if s is Stage.ENABLED:
        return job, [StartWorker()]
    return job, []
