"""Callers do not see starts and restarts (SPEC §4), with real worker processes."""

import os
import signal

import msgspec
import pytest
import trio

from pentarun.errors import WorkerCrashed, WorkerUnavailable
from pentarun.store import records
from pentarun.supervisor.policy import Phase

from .conftest import FAST, eventually, harness


async def test_a_call_made_while_the_worker_starts_waits_and_succeeds(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("slow", mode="slow_start")
        await eventually(lambda: actor.pid is not None)
        assert actor.phase is Phase.STARTING  # the pid is known before the handshake
        reply = await actor.call("echo", "p1", {"n": 1})
        assert reply.value["params"] == {"n": 1}


async def test_calls_ride_out_sigkills_and_the_first_restart_is_immediate(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("victim", manifest={"idempotent": ["echo"]})
        await actor.wait_for(Phase.RUNNING)
        outcomes: list[str] = []
        done = trio.Event()

        async def client() -> None:
            i = 0
            while not done.is_set():
                i += 1
                reply = await actor.call("echo", "p1", {"i": i})  # idempotent by its manifest
                outcomes.append("ok" if reply.value["params"] == {"i": i} else "wrong")

        async def killer() -> None:
            for _ in range(2):
                await actor.wait_for(Phase.RUNNING)
                await trio.sleep(0.2)
                os.kill(actor.pid, signal.SIGKILL)
                await actor.wait_for(Phase.BACKOFF, Phase.STARTING)
            await actor.wait_for(Phase.RUNNING)
            await trio.sleep(0.2)
            done.set()

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(client)
            nursery.start_soon(killer)
        assert outcomes and set(outcomes) == {"ok"}
        assert actor.state.restarts == 2
        await h.db.flush()
        events = records.list_events(h.db, "victim")  # newest first
        reasons = [e.reason for e in events if e.state == "BACKOFF"]
        assert "restarting at once" in reasons[-1]  # the first restart waits for nothing


async def test_a_call_in_flight_that_is_not_idempotent_fails_when_the_worker_dies(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("victim")
        await actor.wait_for(Phase.RUNNING)

        async def kill_soon() -> None:
            await trio.sleep(0.2)
            os.kill(actor.pid, signal.SIGKILL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_soon)
            with pytest.raises(WorkerCrashed):
                await actor.call("sleep", "p1", {"seconds": 5})
        reply = await actor.call("echo", "p1", {})  # and the next call waits for the restart
        assert reply.value["property"] == "p1"


async def test_a_worker_in_long_backoff_is_refused_at_once_with_retry_after(tmp_path):
    config = msgspec.structs.replace(FAST, backoff_initial_s=60.0, backoff_max_s=60.0)
    async with harness(tmp_path, config) as h:
        actor = await h.start("victim")
        for _ in range(2):  # the first restart is immediate, the second backs off 60 s
            await actor.wait_for(Phase.RUNNING)
            os.kill(actor.pid, signal.SIGKILL)
            await actor.wait_for(Phase.BACKOFF)
        with pytest.raises(WorkerUnavailable) as info:
            await actor.call("echo", "p1", {}, 2.0)
        assert info.value.http_status == 503
        assert info.value.details["phase"] == "BACKOFF"
        assert info.value.details["retry_after_s"] > 30


async def test_the_manifest_health_check_overrides_the_server_default(tmp_path):
    config = msgspec.structs.replace(FAST, health_interval_s=3600.0)
    async with harness(tmp_path, config) as h:
        actor = await h.start("checked", manifest={"health_check": {"interval_s": 0.05}})
        await actor.wait_for(Phase.RUNNING)
        await eventually(lambda: actor.last_health is not None)
        assert actor.last_health.ok


async def test_core_calls_beyond_the_in_flight_bound_are_refused_and_audited(tmp_path):
    config = msgspec.structs.replace(FAST, max_in_flight=3)
    async with harness(tmp_path, config) as h:
        actor = await h.start("bursty")
        await actor.wait_for(Phase.RUNNING)
        reply = await actor.call("core.burst", "p1", {"count": 100})
        assert reply.value["refused"] and set(reply.value["refused"]) == {"busy"}
        await h.db.flush()
        audited = records.list_audit(h.db, plugin="bursty", type_="core_call.refused")
        assert len(audited) == len(reply.value["refused"])
        assert audited[0].detail["code"] == "busy" and audited[0].property == "p1"
