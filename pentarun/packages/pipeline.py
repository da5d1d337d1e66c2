"""The install pipeline of one uploaded package: a pure state machine (SPEC §3).

    step(job, event) -> (job, commands)

UPLOADED -> VALIDATING -> [DEPENDENCIES_PENDING] -> INSTALLING -> TESTING -> INSTALLED
-> VERIFIED -> ENABLED <-> DISABLED; failures -> REJECTED; supervision -> QUARANTINED.

`Resume` is fed once per job after a server start: finished states stay, interrupted work is
run again from its start (staging is rebuilt from scratch), at most `MAX_RESUMES` times, after
which the job is REJECTED with the reason. Only VERIFIED or later can be enabled, so nothing
half-installed ever runs. A release from QUARANTINED re-runs the whole suite on the installed
copy; a failure there goes back to QUARANTINED, not REJECTED.

Probation (SPEC §4): a `Quarantine` with `probation_at` (a crash loop of a plugin that had
served well) keeps that time in the job; the shell's timer then feeds `ProbationDue`, which
re-runs the full suite like a release and, when it passes, goes back to ENABLED. A failed
attempt goes back to QUARANTINED with the next attempt's time (`retry_at` of the
`ProbationDue` that started it; None after the last one). Each attempt's end is a
`ProbationResult` command. An operator's release or quarantine cancels a pending probation.

Operators keep the last word during a release or a probation attempt: a `Quarantine` cancels
the running step (`Cancel`) and the job stays QUARANTINED with no probation pending; a `Disable`
lets the suite finish, and a release that passes then ends DISABLED (verified, not running)
instead of starting the worker. Only a release whose suite passed leaves QUARANTINED.

The job also carries the package's test plan, stored at upload (`test_plan`), so the suites
need not unpack the package again; jobs stored before it was kept have None.
"""

from __future__ import annotations

import enum

import msgspec

from .testplan import TestPlan

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
    probation_due_at: float | None = None  # wall-clock time of the next probation attempt
    probation_attempts: int = 0  # attempts made since the quarantine
    probation_retry_at: float | None = None  # the next attempt's time if this one fails
    on_probation: bool = False  # the release under way is a probation attempt
    stay_disabled: bool = False  # disabled during the release: a pass ends DISABLED
    test_plan: TestPlan | None = None  # the package's plan, as stored at upload


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
    probation_at: float | None = None  # re-test on its own at this wall-clock time


class Release(Event, frozen=True):
    pass


class ProbationDue(Event, frozen=True):
    """The probation timer fired: re-test now; `retry_at` is the next attempt if this fails."""

    retry_at: float | None = None


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


class Cancel(Command, frozen=True):
    """Stop the running step at once; whatever it would have reported is dropped."""


class Discard(Command, frozen=True):
    """Remove the job's staging area (and its installed tree unless it is active)."""


class ProbationResult(Command, frozen=True):
    """A probation attempt ended: record it (`retry_at` None: no attempt follows)."""

    attempt: int
    passed: bool
    retry_at: float | None = None


_NO_PROBATION: dict[str, object] = {
    "probation_due_at": None,
    "probation_attempts": 0,
    "probation_retry_at": None,
    "on_probation": False,
}
_NO_RELEASE: dict[str, object] = {
    **_NO_PROBATION,
    "releasing": False,
    "stay_disabled": False,
    "enable_when_verified": False,
}


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
                return job, [
                    Refuse(
                        "the digest does not match what needs approval; "
                        "echo pending_approval.digest of GET /api/plugins/<key>"
                    )
                ]
            return _to(
                job, Stage.INSTALLING, "approved; installing", Run("install"), approval_digest=None
            )
        case OperatorRejected(reason=reason) if s is Stage.DEPENDENCIES_PENDING:
            return _to(job, Stage.REJECTED, reason, Discard(), approval_digest=None)
        case StepDone() if job.running:
            return _advance(job)
        case StepFailed(reason=reason) if job.running:
            if job.releasing:
                return _release_failed(job, reason)
            return _to(job, Stage.REJECTED, reason, Discard())
        case Enable() if s in (Stage.VERIFIED, Stage.DISABLED):
            return _to(job, Stage.ENABLED, "enabled", StartWorker())
        case Enable() if job.running or s is Stage.DEPENDENCIES_PENDING:
            return msgspec.structs.replace(job, enable_when_verified=True, stay_disabled=False), []
        case Enable() if s is not Stage.ENABLED:
            return job, [Refuse(f"a {s.value} plugin cannot be enabled")]
        case Disable(reason=reason) if s is Stage.ENABLED:
            return _to(job, Stage.DISABLED, reason, StopWorker())
        case Disable() if job.releasing:
            return msgspec.structs.replace(job, enable_when_verified=False, stay_disabled=True), []
        case Disable() if job.running or s is Stage.DEPENDENCIES_PENDING:
            return msgspec.structs.replace(job, enable_when_verified=False), []
        case Disable(reason=reason) if s is Stage.QUARANTINED and job.probation_due_at is not None:
            # an operator turned it off: probation must not bring it back
            return _to(job, Stage.QUARANTINED, f"{reason} (probation cancelled)", **_NO_PROBATION)
        case Quarantine(reason=reason) if job.releasing:
            what = "probation attempt" if job.on_probation else "release"
            return _to(
                job, Stage.QUARANTINED, f"{reason} ({what} cancelled)", Cancel(), **_NO_RELEASE
            )
        case Quarantine(reason=reason, probation_at=at) if s in SERVABLE:
            # probation is for a plugin that was serving: not one an operator had turned off
            due = at if s is Stage.ENABLED else None
            probation = {**_NO_PROBATION, "probation_due_at": due}
            return _to(job, Stage.QUARANTINED, reason, StopWorker(), **probation)
        case Quarantine(reason=reason, probation_at=None) if (
            s is Stage.QUARANTINED and job.probation_due_at is not None
        ):
            return _to(job, Stage.QUARANTINED, f"{reason} (probation cancelled)", **_NO_PROBATION)
        case Quarantine() if s is not Stage.QUARANTINED:
            return job, [
                Refuse(f"a {s.value} plugin cannot be quarantined; uninstall it to stop it")
            ]
        case ProbationDue(retry_at=retry_at) if (
            s is Stage.QUARANTINED and job.probation_due_at is not None
        ):
            attempt = job.probation_attempts + 1
            return _to(
                job,
                Stage.TESTING,
                f"probation attempt {attempt}: running the full test suite",
                Run("test"),
                releasing=True,
                on_probation=True,
                probation_attempts=attempt,
                probation_due_at=None,
                probation_retry_at=retry_at,
            )
        case Release() if s is Stage.QUARANTINED:
            return _to(
                job,
                Stage.TESTING,
                "release: running the full test suite",
                Run("test"),
                releasing=True,
                **_NO_PROBATION,
            )
        case Release():
            return job, [
                Refuse(f"only a QUARANTINED plugin can be released, this one is {s.value}")
            ]
        case Resume():
            return _resume(job)
    return job, []


def _release_failed(job: Job, reason: str) -> tuple[Job, list[Command]]:
    """A release (or a probation attempt) failed: back to QUARANTINED; probation goes on."""
    if not job.on_probation:
        return _to(
            job,
            Stage.QUARANTINED,
            f"release failed: {reason}",
            releasing=False,
            stay_disabled=False,
        )
    attempt, retry_at = job.probation_attempts, job.probation_retry_at
    if job.stay_disabled:  # disabled by an operator during the attempt: probation ends here
        retry_at, reason = None, f"{reason}; disabled by an operator, probation ended"
    return _to(
        job,
        Stage.QUARANTINED,
        f"probation attempt {attempt} failed: {reason}",
        ProbationResult(attempt, False, retry_at),
        releasing=False,
        stay_disabled=False,
        on_probation=False,
        probation_due_at=retry_at,
        probation_retry_at=None,
    )


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
        case "verify" if job.releasing and job.stay_disabled:
            passed = [ProbationResult(job.probation_attempts, True)] if job.on_probation else []
            return _to(
                job,
                Stage.DISABLED,
                "verified; released, and disabled by an operator during the release",
                Activate(),
                *passed,
                **_NO_RELEASE,
            )
        case "verify" if job.on_probation:
            return _to(
                job,
                Stage.ENABLED,
                f"verified; released by probation attempt {job.probation_attempts}",
                Activate(),
                StartWorker(),
                ProbationResult(job.probation_attempts, True),
                releasing=False,
                enable_when_verified=False,
                **_NO_PROBATION,
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
                return _release_failed(job, reason)
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
