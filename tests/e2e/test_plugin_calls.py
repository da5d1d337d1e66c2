"""Plugin -> plugin calls through the core, with real sandboxed workers (issue 10)."""

import json

import trio

from pentarun.store import records
from pentarun.supervisor.policy import Phase

from .conftest import PLUGINS, eventually, harness

PROBE = json.loads((PLUGINS / "probe" / "definition.json").read_text())
CALLER = {"scopes": [*PROBE["scopes"], "plugins:call"], "dependencies": {"nvr": ">=1"}}


async def running(*actors):
    with trio.fail_after(15):
        for actor in actors:
            await actor.wait_for(Phase.RUNNING)


async def ask(caller, plugin, handler, params=None, *, prop="p1", deadline_s=None):
    body = {"plugin": plugin, "handler": handler, "params": params or {}}
    return (await caller.call("ask", prop, body, deadline_s)).value


async def test_a_declared_dependency_is_called_through_the_core_for_the_same_property(tmp_path):
    async with harness(tmp_path, sandboxed=True) as h:
        nvr = await h.start("nvr")
        caller = await h.start("cam", manifest=CALLER)
        other = await h.start("other")
        await running(nvr, caller, other)

        answer = await ask(caller, "nvr", "echo", {"x": 1})
        assert answer == {"value": {"property": "p1", "params": {"x": 1}}}
        assert nvr.stats.total == 1 and caller.telemetry.outgoing.total == 1
        await h.db.flush()
        (row,) = records.list_audit(h.db, type_="plugin.call", plugin="cam")
        assert row.detail["callee"] == "nvr" and row.detail["outcome"] == "ok"

        undeclared = await ask(caller, "other", "echo")
        assert (undeclared["error"], undeclared["status"]) == ("not_a_dependency", 403)
        assert "'other' is not in its dependencies" in undeclared["message"]
        unknown = await ask(caller, "nvr", "nope")
        assert (unknown["error"], unknown["status"]) == ("not_found", 404)
        failed = await ask(caller, "nvr", "fail")  # the callee's own error comes back as is
        assert failed == {"error": "not_found", "status": 404, "message": "no such thing"}
        await h.db.flush()
        refused = records.list_audit(h.db, type_="security.core_call_refused", plugin="cam")
        assert any(r.detail["code"] == "not_a_dependency" for r in refused)


async def test_the_callee_must_serve_the_callers_property(tmp_path):
    async with harness(tmp_path, sandboxed=True) as h:
        nvr = await h.start("nvr", properties=("p1",))
        caller = await h.start("cam", properties=("p1", "p2"), manifest=CALLER)
        await running(nvr, caller)
        answer = await ask(caller, "nvr", "echo", prop="p2")
        assert (answer["error"], answer["status"]) == ("property_not_assigned", 403)


async def test_the_callee_gets_what_is_left_of_the_callers_deadline(tmp_path):
    async with harness(tmp_path, sandboxed=True) as h:
        nvr = await h.start("nvr")
        caller = await h.start("cam", manifest=CALLER)
        await running(nvr, caller)
        started = trio.current_time()
        answer = await ask(caller, "nvr", "sleep", {"seconds": 30}, deadline_s=3)
        assert answer["error"] == "call_timeout" and trio.current_time() - started < 3


async def test_a_quarantined_callee_fails_fast_and_a_missing_scope_is_refused(tmp_path):
    async with harness(tmp_path, sandboxed=True) as h:
        nvr = await h.start("nvr")
        caller = await h.start("cam", manifest=CALLER)
        unscoped = await h.start("bare", manifest={"dependencies": {"nvr": ">=1"}})
        await running(nvr, caller, unscoped)
        nvr.quarantine("test")
        await eventually(lambda: nvr.phase is Phase.QUARANTINED)
        started = trio.current_time()
        answer = await ask(caller, "nvr", "echo")
        assert (answer["error"], answer["status"]) == ("plugin_quarantined", 503)
        assert trio.current_time() - started < 1
        denied = await ask(unscoped, "nvr", "echo")
        assert (denied["error"], denied["status"]) == ("scope_denied", 403)
