"""Workers that break their side of the channel, flood it, or whose actor breaks."""

import contextlib

import msgspec
import trio

from pentarun.errors import CallTimeout, TokenInvalid, WorkerCrashed, WorkerUnavailable
from pentarun.supervisor.policy import Phase

from .conftest import FAST, eventually, harness


async def test_a_worker_that_stops_reading_is_replaced_and_the_server_never_stalls(tmp_path):
    config = msgspec.structs.replace(FAST, health_interval_s=3600.0)  # no health rescue
    async with harness(tmp_path, config) as h:
        actor = await h.start("deaf")
        await actor.wait_for(Phase.RUNNING)
        first = actor.pid
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await actor.call("deafen", "p1", {})
            with contextlib.suppress(WorkerCrashed, CallTimeout):
                await actor.call("echo", "p1", {}, 0.5)  # finds the channel broken
            before = ticks
            with contextlib.suppress(WorkerCrashed, WorkerUnavailable, CallTimeout):
                await actor.call("echo", "p1", {}, 2.0)
            assert ticks > before  # the event loop ran meanwhile
            reply = await actor.call("echo", "p1", {"after": True})
            nursery.cancel_scope.cancel()
        assert reply.value["params"] == {"after": True}
        assert actor.pid != first and actor.state.restarts >= 1


async def test_log_records_are_cut_to_a_line(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("loud")
        await actor.wait_for(Phase.RUNNING)
        await actor.call("log.big", "p1", {"size": 200_000})
        await eventually(lambda: any(line.message.startswith("yyy") for line in actor.logs))
        line = next(line for line in actor.logs if line.message.startswith("yyy"))
        assert len(line.message) == 4096 and len(line.logger) == 4096


async def test_unassigning_a_property_revokes_the_tokens_the_worker_holds(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("scoped", properties=("p1", "p2"))
        await actor.wait_for(Phase.RUNNING)
        tokens = h.platform.tokens
        old, _ = tokens.issue("scoped", [], ["p1", "p2"], 60)  # as the worker holds it
        tokens.verify(old, "scoped")
        actor.refresh_token()
        try:
            tokens.verify(old, "scoped")
            raise AssertionError("the old token still verifies")
        except TokenInvalid:
            pass


async def test_a_broken_actor_is_quarantined_and_replaced_on_the_next_start(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("broken")
        await actor.wait_for(Phase.RUNNING)
        actor.fail("a bug")
        assert actor.phase is Phase.QUARANTINED and actor.state.rule == "internal_error"
        fresh = await h.supervisor.replace(actor.spec, actor.manifest)
        assert fresh is not actor and h.supervisor.directory.get("broken") is fresh
        fresh.start()
        reply = await fresh.call("echo", "p1", {})
        assert reply.value["property"] == "p1"
