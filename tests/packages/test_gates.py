"""The five gates against real worker processes staged from real package trees."""

import json

from pentarun.config import SupervisorConfig
from pentarun.packages.gates import GATES, run_gates
from pentarun.packages.installer import worker_spec, write_tree
from pentarun.packages.package import InspectContext, inspect_files

from .factory import PLAN, WORKER, definition, source

CONFIG = SupervisorConfig(call_timeout_s=5, startup_timeout_s=10, stop_timeout_s=1)


async def gates_for(tmp_path, files, burst=10):
    package, problems = inspect_files(files, InspectContext("0.1.0"), require_identity=False)
    assert problems == []
    write_tree(files, tmp_path / "tree")
    seen = []
    report = await run_gates(
        worker_spec(package.key, tmp_path / "tree"),
        package.manifest,
        package.test_plan,
        CONFIG,
        burst=burst,
        progress=seen.append,
    )
    return report, seen


async def test_a_good_plugin_passes_every_gate(tmp_path):
    report, seen = await gates_for(tmp_path, source())
    assert report.ok, report.failures()
    assert [g.gate for g in report.gates] == list(GATES)
    security = {c.name for c in report.gates[2].cases}
    assert {
        "core refuses a missing token",
        "core refuses a forged token",
        "core refuses an expired token",
        "core refuses a revoked token",
        "core refuses cross-property access",
        "calls for an unassigned property are refused",
    } <= security
    load = report.gates[3]
    assert load.stats["calls"] == 10 and load.stats["p50_ms"] > 0
    assert "recovery: passed" in seen


STATEFUL = WORKER.replace(
    b"""    return {"property": ctx.property, "params": params}""",
    b"""    if "fail" in params:
        from pentarun.sdk import Error
        raise Error("nope", "told to fail", 409)
    await ctx.store.set("seen", params)
    return {"property": ctx.property, "seen": await ctx.store.get("seen")}""",
)


async def test_declared_failures_and_stored_state_are_checked(tmp_path):
    plan = {"cases": [*PLAN["cases"],
        {"name": "fails as declared", "category": "security", "handler": "demo.echo",
         "params": {"fail": 1}, "expect": {"ok": False, "error": "nope", "status": 409}},
        {"name": "state is back", "category": "recovery", "handler": "demo.echo",
         "params": {"b": 2}, "expect": {"ok": True}},
    ]}  # fmt: skip
    files = source(
        **{"worker__plugin_worker.py": STATEFUL, "tests__test_plan.json": json.dumps(plan).encode()}
    )
    report, _ = await gates_for(tmp_path, files)
    assert report.ok, report.failures()
    recovery = {c.name: c.ok for c in report.gates[4].cases}
    assert recovery == {
        "restarts after SIGKILL": True,
        "state stored through the SDK survives": True,
        "state is back": True,
    }


async def test_a_failing_case_fails_its_gate_closed(tmp_path):
    plan = {
        "cases": [
            {
                "name": "expects an error it will not get",
                "category": "integration",
                "handler": "demo.echo",
                "expect": {"ok": False, "error": "nope"},
            }
        ]
    }
    report, _ = await gates_for(
        tmp_path, source(**{"tests__test_plan.json": json.dumps(plan).encode()})
    )
    assert not report.ok
    integration = report.gates[1]
    assert not integration.ok
    assert integration.cases[0].detail == "expected an error, got success"
    assert report.failures()[0].startswith("integration: expects an error")


async def test_a_worker_that_cannot_start_fails_everything(tmp_path):
    files = source(**{"worker__plugin_worker.py": b"import sys\nsys.exit(4)\n"})
    report, _ = await gates_for(tmp_path, files)
    assert not report.ok
    assert [g.ok for g in report.gates] == [False] * 5
    assert report.gates[1].detail == "not run: the self gate failed"
    assert "exited with code 4" in report.gates[0].cases[0].detail


async def test_a_declared_handler_the_worker_lacks_fails_the_self_gate(tmp_path):
    files = source(definition(handlers=["demo.echo", "demo.missing"]))
    report, _ = await gates_for(tmp_path, files)
    assert not report.ok
    self_gate = report.gates[0]
    implemented = next(c for c in self_gate.cases if c.name.startswith("implements"))
    assert not implemented.ok
    assert implemented.detail == "the worker does not implement: handler 'demo.missing'"
    assert report.gates[1].detail == "not run: the self gate failed"
