"""The five test gates (SPEC §5), run against a staged worker on fixture data.

Each run gets its own harness: a temporary store, its own supervisor and token issuer, and
fixture properties; nothing touches the server's real data. The plugin is assigned
`fixture-a`; `fixture-b` exists for cross-property probes. Gates run in order (self,
integration, security, load, recovery); a gate that cannot run because an earlier one broke
the worker fails too: the run fails closed.
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio

from ..assembly import assemble
from ..config import StorageConfig, SupervisorConfig
from ..errors import (
    Busy,
    CallTimeout,
    PentarunError,
    PropertyNotAssigned,
    TokenInvalid,
    WorkerUnavailable,
)
from ..ipc.messages import CoreCall, HttpReply, Reply
from ..lanes.core import CoreApi
from ..lanes.storage import StorageLane
from ..sandbox.launcher import Sandbox, escape_probes
from ..security.tokens import PluginTokens
from ..store import records
from ..store.db import Database, open_database
from ..supervisor.actor import WorkerActor
from ..supervisor.policy import Phase
from ..supervisor.process import WorkerSpec
from ..supervisor.streams import StreamReply
from ..supervisor.supervisor import Supervisor
from .implementation import missing_from_hello
from .manifest import Manifest
from .testplan import Case, TestPlan

GATES = ("self", "integration", "security", "load", "recovery")
FIXTURE_PROPERTIES = (("fixture-a", "Fixture property A"), ("fixture-b", "Fixture property B"))
FIXTURE_CAMERAS = (
    ("fixture-a", "front", "Front door"),
    ("fixture-a", "yard", "Back yard"),
    ("fixture-b", "gate", "Gate"),
)
HOME, OTHER = FIXTURE_PROPERTIES[0][0], FIXTURE_PROPERTIES[1][0]

Progress = Callable[[str], None]


class CaseResult(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str = ""
    duration_ms: float = 0.0


class GateResult(msgspec.Struct, frozen=True):
    gate: str
    ok: bool
    cases: list[CaseResult] = []
    detail: str = ""
    stats: dict[str, float] = {}


class Report(msgspec.Struct, frozen=True):
    ok: bool
    gates: list[GateResult]
    started_at: float
    finished_at: float

    def failures(self) -> list[str]:
        out = []
        for gate in self.gates:
            if not gate.ok:
                bad = [f"{c.name}: {c.detail}" for c in gate.cases if not c.ok]
                out.append(f"{gate.gate}: " + ("; ".join(bad) or gate.detail))
        return out


def gate_config(base: SupervisorConfig) -> SupervisorConfig:
    """Supervision for a gate run: fast restarts, no background probes racing the gates."""
    return msgspec.structs.replace(
        base,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        health_interval_s=3600.0,
        crash_limit=max(base.crash_limit, 3),
        startup_timeout_s=min(base.startup_timeout_s, 30.0),
    )


@dataclass
class _Harness:
    db: Database
    supervisor: Supervisor
    core: CoreApi
    actor: WorkerActor
    manifest: Manifest
    plan: TestPlan
    call_timeout: float
    burst: int
    spec: WorkerSpec
    sandbox: Sandbox | None


@asynccontextmanager
async def _harness(
    spec: WorkerSpec,
    manifest: Manifest,
    plan: TestPlan,
    config: SupervisorConfig,
    burst: int,
    *,
    sandbox: Sandbox | None,
) -> AsyncIterator[_Harness]:
    with tempfile.TemporaryDirectory(prefix="pentarun-gates-") as tmp:
        async with open_database(Path(tmp) / "gates.db") as db, trio.open_nursery() as nursery:
            scratch = sandbox.scratch(Path(tmp)) if sandbox is not None else None
            # a plugin that keeps files (`ctx.storage`) keeps them here while it is tested
            storage = StorageLane(Path(tmp) / "storage", StorageConfig())
            platform = assemble(config, db, sandbox=scratch, storage=storage)
            supervisor = platform.supervisor
            await nursery.start(supervisor.run)
            await records.upsert_plugin(
                db,
                manifest.key,
                name=manifest.name,
                version=manifest.version,
                state="TESTING",
                manifest=manifest,
            )
            for pid, name in FIXTURE_PROPERTIES:
                await records.create_property(db, pid, name)
            for pid, camera, name in FIXTURE_CAMERAS:
                await records.create_camera(db, pid, camera, name=name, source={"kind": "demo"})
            await records.assign_property(db, manifest.key, HOME)
            actor = await supervisor.add(spec, manifest)
            try:
                yield _Harness(
                    db,
                    supervisor,
                    platform.core,
                    actor,
                    manifest,
                    plan,
                    config.call_timeout_s,
                    burst,
                    spec,
                    sandbox,
                )
            finally:
                with trio.CancelScope(shield=True):
                    await supervisor.stop_all(config.stop_timeout_s * 2 + 1, "test run over")
                nursery.cancel_scope.cancel()


async def run_gates(
    spec: WorkerSpec,
    manifest: Manifest,
    plan: TestPlan,
    config: SupervisorConfig,
    *,
    burst: int = 50,
    progress: Progress | None = None,
    only: tuple[str, ...] = GATES,
    sandbox: Sandbox | None = None,
) -> Report:
    started = time.time()
    say = progress or (lambda text: None)
    results: list[GateResult] = []
    async with _harness(spec, manifest, plan, gate_config(config), burst, sandbox=sandbox) as h:
        gates: list[tuple[str, Callable[[_Harness], Awaitable[GateResult]]]] = [
            ("self", _self_gate),
            ("integration", _integration_gate),
            ("security", _security_gate),
            ("load", _load_gate),
            ("recovery", _recovery_gate),
        ]
        for name, gate in gates:
            if name not in only:
                continue
            if results and not results[0].ok:
                results.append(GateResult(name, False, detail="not run: the self gate failed"))
                say(f"{name}: skipped")
                continue
            say(f"{name}: running")
            try:
                result = await gate(h)
            except PentarunError as exc:
                result = GateResult(name, False, detail=f"{exc.error_code}: {exc.message}")
            results.append(result)
            say(f"{name}: {'passed' if result.ok else 'FAILED'}")
    return Report(all(r.ok for r in results), results, started, time.time())


# --- the gates ----------------------------------------------------------------------------


async def _self_gate(h: _Harness) -> GateResult:
    h.actor.start()
    cases = []
    started = trio.current_time()
    with trio.move_on_after(h.supervisor.config.startup_timeout_s + 1):
        await h.actor.wait_for(Phase.RUNNING, Phase.QUARANTINED, Phase.BACKOFF)
    took = (trio.current_time() - started) * 1000
    if h.actor.phase is not Phase.RUNNING:
        detail = h.actor.state.reason or "no handshake before the startup deadline"
        logs = [ln.message for ln in h.actor.logs][-5:]
        return GateResult(
            "self",
            False,
            [
                CaseResult(
                    "starts and completes the handshake",
                    False,
                    f"{detail}; last output: {logs}",
                    took,
                )
            ],
        )
    cases.append(CaseResult("starts and completes the handshake", True, duration_ms=took))
    hello = h.actor.hello
    missing = (
        ["its hello (none was recorded)"]
        if hello is None
        else missing_from_hello(h.manifest, hello.handlers, hello.hooks, hello.events)
    )
    cases.append(
        CaseResult(
            "implements what definition.json declares",
            not missing,
            "the worker does not implement: " + ", ".join(missing) if missing else "",
        )
    )
    health = await h.actor.probe_health()
    cases.append(
        CaseResult(
            "answers health",
            health.ok,
            health.error,
            health.latency_ms,
        )
    )
    return GateResult("self", all(c.ok for c in cases), cases)


async def _run_case(h: _Harness, case: Case, property_id: str = HOME) -> CaseResult:
    started = trio.current_time()
    try:
        reply = await h.actor.call(case.handler, property_id, case.params, h.call_timeout)
        outcome: tuple[bool, str, int] = (True, "", _status(reply))
    except PentarunError as exc:
        outcome = (False, exc.error_code, exc.http_status)
    took = (trio.current_time() - started) * 1000
    ok, code, status = outcome
    want = case.expect
    problems = []
    if ok != want.ok:
        problems.append(
            f"expected {'success' if want.ok else 'an error'}, got "
            + ("success" if ok else f"error {code!r}")
        )
    elif not ok and want.error is not None and code != want.error:
        problems.append(f"expected error {want.error!r}, got {code!r}")
    if want.status is not None and status != want.status:
        problems.append(f"expected status {want.status}, got {status}")
    return CaseResult(case.name, not problems, "; ".join(problems), took)


def _status(reply: Reply | HttpReply | StreamReply) -> int:
    if isinstance(reply, StreamReply):
        reply.close()  # a gate checks that the stream starts, not its content
        return reply.start.status
    return reply.status if isinstance(reply, HttpReply) else 200


async def _integration_gate(h: _Harness) -> GateResult:
    cases = [await _run_case(h, case) for case in h.plan.of("integration")]
    return GateResult("integration", all(c.ok for c in cases), cases)


async def _security_gate(h: _Harness) -> GateResult:
    cases = [await _run_case(h, case) for case in h.plan.of("security")]
    key, scopes, tokens = h.manifest.key, list(h.manifest.scopes), h.supervisor.tokens
    api = h.core

    async def refused(
        name: str,
        token: str,
        property_id: str,
        expect: type[PentarunError],
        reason: str | None = None,
    ) -> CaseResult:
        call = CoreCall(
            id=0, token=token, property=property_id, name="store.get", params={"key": "probe"}
        )
        try:
            await api.handle(key, call)
        except expect as exc:
            if reason is None or exc.details.get("reason") == reason:
                return CaseResult(name, True)
            return CaseResult(name, False, f"refused for {exc.details.get('reason')!r}")
        except PentarunError as exc:
            return CaseResult(name, False, f"refused with {exc.error_code}, not {expect.code}")
        return CaseResult(name, False, "the core accepted it")

    valid, _ = tokens.issue(key, scopes, [HOME], 60)
    forged, _ = PluginTokens().issue(key, scopes, [HOME], 60)
    expired, _ = tokens.issue(key, scopes, [HOME], 60, now=time.time() - 120)
    cases += [
        await refused("core refuses a missing token", "", HOME, TokenInvalid, "missing"),
        await refused("core refuses a forged token", forged, HOME, TokenInvalid, "invalid"),
        await refused("core refuses an expired token", expired, HOME, TokenInvalid, "expired"),
        await refused("core refuses cross-property access", valid, OTHER, PropertyNotAssigned),
    ]
    tokens.revoke(key)
    cases.append(
        await refused("core refuses a revoked token", valid, HOME, TokenInvalid, "revoked")
    )
    cases += await _escape_cases(h)
    h.actor.refresh_token()  # the worker's own token was revoked with the rest
    for handler in h.manifest.handlers[:1]:
        try:
            await h.actor.call(handler, OTHER, {}, h.call_timeout)
            cases.append(
                CaseResult(
                    "calls for an unassigned property are refused",
                    False,
                    "the call reached the worker",
                )
            )
        except PropertyNotAssigned:
            cases.append(CaseResult("calls for an unassigned property are refused", True))
    return GateResult("security", all(c.ok for c in cases), cases)


async def _escape_cases(h: _Harness) -> list[CaseResult]:
    """The built-in escape probes in the plugin's own sandbox (fail closed on any)."""
    if h.sandbox is None:
        return [CaseResult("sandbox escape probes", True, "skipped: security.sandbox is off")]
    with socket.socket() as listener:  # a host port the probes must not reach
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        results = await trio.to_thread.run_sync(
            escape_probes,
            h.sandbox,
            h.manifest.key,
            h.spec.root,
            h.manifest.resources,
            listener.getsockname()[1],
        )
    return [
        CaseResult(f"sandbox keeps it from: {r.probe}", not r.escaped, r.detail) for r in results
    ]


async def _load_gate(h: _Harness) -> GateResult:
    declared = h.plan.of("load") or h.plan.of("integration")
    cases = declared or [Case(f"{name} answers", "load", name) for name in h.manifest.handlers]
    answered_is_enough = not declared
    results: list[CaseResult] = []
    latencies: list[float] = []
    for case in cases:
        outcomes: list[CaseResult] = []

        async def one(case: Case = case, outcomes: list[CaseResult] = outcomes) -> None:
            result = await _run_case(h, case)
            if answered_is_enough and not result.ok:
                result = await _answered(h, case)
            outcomes.append(result)

        async with trio.open_nursery() as nursery:
            for _ in range(h.burst):
                nursery.start_soon(one)
        latencies += [o.duration_ms for o in outcomes]
        failed = [o for o in outcomes if not o.ok]
        detail = f"{len(failed)} of {h.burst} failed: {failed[0].detail}" if failed else ""
        results.append(
            CaseResult(
                f"{case.name} x{h.burst} concurrent",
                not failed,
                detail,
                max(o.duration_ms for o in outcomes),
            )
        )
    stats = _latency_stats(latencies)
    return GateResult("load", all(r.ok for r in results), results, stats=stats)


async def _answered(h: _Harness, case: Case) -> CaseResult:
    """Without declared expectations, any answer within the deadline passes the load gate."""
    started = trio.current_time()
    try:
        await h.actor.call(case.handler, HOME, case.params, h.call_timeout)
    except (CallTimeout, Busy, WorkerUnavailable) as exc:
        return CaseResult(case.name, False, exc.message, (trio.current_time() - started) * 1000)
    except PentarunError:
        pass
    return CaseResult(case.name, True, duration_ms=(trio.current_time() - started) * 1000)


def _latency_stats(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "calls": float(len(ordered)),
        "p50_ms": pick(0.5),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "max_ms": ordered[-1],
        "mean_ms": statistics.fmean(ordered),
    }


async def _recovery_gate(h: _Harness) -> GateResult:
    before = _stored_state(h)
    old_pid = h.actor.pid
    started = trio.current_time()
    h.actor.kill()
    cases = []
    with trio.move_on_after(h.supervisor.config.startup_timeout_s + 5):
        await h.actor.wait_for(Phase.BACKOFF, Phase.QUARANTINED)
        await h.actor.wait_for(Phase.RUNNING, Phase.QUARANTINED)
    restarted = h.actor.phase is Phase.RUNNING and h.actor.pid not in (None, old_pid)
    took = (trio.current_time() - started) * 1000
    detail = "" if restarted else f"worker is {h.actor.phase.value}"
    cases.append(CaseResult("restarts after SIGKILL", restarted, detail, took))
    if not restarted:
        return GateResult("recovery", False, cases)
    after = _stored_state(h)
    cases.append(
        CaseResult(
            "state stored through the SDK survives",
            after == before,
            "" if after == before else "stored state changed across the restart",
        )
    )
    declared = h.plan.of("recovery") or h.plan.of("integration")[:1]
    cases += [await _run_case(h, case) for case in declared]
    return GateResult("recovery", all(c.ok for c in cases), cases)


def _stored_state(h: _Harness) -> dict[str, Any]:
    rows = h.db.read(
        "SELECT property_id, key, value FROM plugin_state WHERE plugin_key = ? ORDER BY 1, 2",
        (h.manifest.key,),
    )
    return {f"{r['property_id']}/{r['key']}": bytes(r["value"]) for r in rows}
