"""Supervision with real worker processes (SPEC §4), on short thresholds."""

import contextlib

import msgspec
import pytest
import trio

from pentarun.errors import (
    Busy,
    CallTimeout,
    PropertyNotAssigned,
    RemoteError,
    TokenInvalid,
    WorkerCrashed,
    WorkerUnavailable,
)
from pentarun.ipc.messages import HttpReply
from pentarun.store import records
from pentarun.supervisor.actor import EVENT_BACKLOG
from pentarun.supervisor.policy import Phase

from .conftest import FAST, eventually, harness


async def test_calls_reach_the_worker_and_come_back(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("probe")
        with trio.fail_after(10):
            await actor.wait_for(Phase.RUNNING)
        reply = await actor.call("echo", "p1", {"x": [1, 2]})
        assert reply.value == {"property": "p1", "params": {"x": [1, 2]}}
        raw = await actor.call("raw", "p1", {})
        assert isinstance(raw, HttpReply)
        assert (raw.status, raw.body, raw.content_type) == (201, b"\x89PNG", "image/png")
        with pytest.raises(RemoteError) as info:
            await actor.call("fail", "p1", {})
        assert (info.value.error_code, info.value.http_status) == ("not_found", 404)
        with pytest.raises(RemoteError) as info:
            await actor.call("nope", "p1", {})
        assert info.value.error_code == "unknown_handler"
        with pytest.raises(PropertyNotAssigned):
            await actor.call("echo", "p2", {})
        assert actor.pid is not None


async def test_print_does_not_break_the_channel_and_lands_in_logs(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("probe")
        await actor.wait_for(Phase.RUNNING)
        assert (await actor.call("print", "p1", {})).value == {"printed": True}
        assert (await actor.call("echo", "p1", {})).value["property"] == "p1"
        await eventually(lambda: any("hello from print" in ln.message for ln in actor.logs))


async def test_store_persists_per_property_across_worker_restart(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("probe", properties=("p1", "p2"))
        await actor.wait_for(Phase.RUNNING)
        await actor.call("store.roundtrip", "p1", {"set": {"n": 1}})
        assert (await actor.call("store.roundtrip", "p2", {})).value["value"] is None
        with pytest.raises(WorkerCrashed):
            await actor.call("exit", "p1", {"code": 1})
        await actor.wait_for(Phase.BACKOFF)
        await actor.wait_for(Phase.RUNNING)
        assert (await actor.call("store.roundtrip", "p1", {})).value == {
            "value": {"n": 1},
            "keys": ["value"],
        }


async def test_worker_cannot_read_another_property_and_attempt_is_audited(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("probe", properties=("p1",))
        await records.create_property(h.db, "p2", "other")
        await actor.wait_for(Phase.RUNNING)
        with pytest.raises(RemoteError) as info:
            await actor.call("read_other_property", "p1", {"property": "p2"})
        assert info.value.error_code == "property_not_assigned"
        await h.db.flush()
        refused = records.list_audit(h.db, plugin="probe", type_="security.core_call_refused")
        assert refused and refused[0].property == "p2"


async def test_crash_on_start_ends_quarantined_for_crash_loop(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("crashy", mode="crash_on_start")
        with trio.fail_after(15):
            await actor.wait_for(Phase.QUARANTINED)
        assert actor.state.rule == "crash_loop"
        assert actor.state.restarts == FAST.crash_limit - 1
        await h.db.flush()
        events = records.list_events(h.db, "crashy")
        quarantined = next(e for e in events if e.type == "quarantined")
        assert quarantined.detail["evidence"]["last_exit"] == "exited with code 3"
        assert quarantined.detail["probation"] is False  # it never passed a health check
        backoffs = [e for e in events if e.state == "BACKOFF"]
        assert backoffs and all(e.next_retry_at is not None for e in backoffs)
        with pytest.raises(WorkerUnavailable) as info:
            await actor.call("echo", "p1", {})
        assert info.value.details["phase"] == "QUARANTINED"


async def test_unanswered_health_restarts_after_3_and_quarantines_after_9(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("sick", mode="hang_health")
        with trio.fail_after(30):
            await actor.wait_for(Phase.QUARANTINED)
        assert actor.state.rule == "health"
        assert actor.state.restarts == 2  # after failures 3 and 6
        await h.db.flush()
        reasons = [e.reason for e in records.list_events(h.db, "sick")]
        assert any(r.startswith("restart: 3 consecutive failed health checks") for r in reasons)
        assert any(r.startswith("restart: 6 consecutive") for r in reasons)
        assert any(r.startswith("9 consecutive failed health checks") for r in reasons)
        assert records.list_health(h.db, "sick")[0].ok is False


async def test_error_storm_quarantines(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("stormy", mode="storm_on_start")
        with trio.fail_after(10):
            await actor.wait_for(Phase.QUARANTINED)
        assert actor.state.rule == "error_storm"
        assert any("storm record" in line for line in actor.evidence().last_log_lines)


async def test_garbage_on_the_channel_kills_the_worker_as_a_crash(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("garbled")
        await actor.wait_for(Phase.RUNNING)
        first_pid = actor.pid
        with pytest.raises((WorkerCrashed, RemoteError)):
            await actor.call("garbage", "p1", {})
        await actor.wait_for(Phase.BACKOFF)
        assert "protocol violation" in actor.state.reason
        assert len(actor.state.crashes) == 1
        await actor.wait_for(Phase.RUNNING)
        assert actor.pid != first_pid


async def test_protocol_version_mismatch_is_a_crash(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("old", mode="old_protocol")
        with trio.fail_after(15):
            await actor.wait_for(Phase.QUARANTINED)
        assert "protocol" in actor.state.reason


async def test_startup_timeout_kills_and_counts_as_crash(tmp_path):
    config = msgspec.structs.replace(FAST, startup_timeout_s=0.5, crash_limit=2)
    async with harness(tmp_path, config) as h:
        actor = await h.start("mute", mode="no_handshake")
        with trio.fail_after(15):
            await actor.wait_for(Phase.QUARANTINED)
        assert "no handshake within 0.5 s" in actor.state.reason


async def test_call_deadline_and_in_flight_calls_fail_fast_on_death(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("probe")
        await actor.wait_for(Phase.RUNNING)
        with pytest.raises(CallTimeout):
            await actor.call("sleep", "p1", {"seconds": 5}, deadline_s=0.2)
        failures: list[BaseException] = []

        async def slow_call() -> None:
            try:
                await actor.call("sleep", "p1", {"seconds": 30})
            except WorkerCrashed as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(slow_call)
            await trio.sleep(0.2)
            with trio.fail_after(2), pytest.raises(WorkerCrashed):
                await actor.call("exit", "p1", {})
        assert len(failures) == 5


async def test_a_crash_looping_plugin_does_not_disturb_a_healthy_one(tmp_path):
    async with harness(tmp_path) as h:
        healthy = await h.start("healthy")
        await healthy.wait_for(Phase.RUNNING)
        bad = await h.start("crashy", mode="crash_on_start")
        served = 0
        with trio.fail_after(20):
            while bad.phase is not Phase.QUARANTINED:
                assert (await healthy.call("echo", "p1", {"i": served})).value["params"][
                    "i"
                ] == served
                served += 1
        assert served > 10 and healthy.phase is Phase.RUNNING


async def test_graceful_stop_and_quarantine_release(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("probe")
        await actor.wait_for(Phase.RUNNING)
        actor.quarantine("operator says so")
        await actor.wait_for(Phase.QUARANTINED)
        await eventually(lambda: actor.pid is None or actor._gen.ended.is_set())
        actor.release()
        await actor.wait_for(Phase.STOPPED)
        actor.start()
        await actor.wait_for(Phase.RUNNING)
        assert (await actor.call("echo", "p1", {})).value["property"] == "p1"
        actor.stop()
        with trio.fail_after(5):
            await actor.wait_for(Phase.STOPPED)
        assert actor.last_exit == "exited with code 0"


async def test_calls_beyond_max_in_flight_are_refused_as_busy(tmp_path):
    config = msgspec.structs.replace(FAST, max_in_flight=2)
    async with harness(tmp_path, config) as h:
        actor = await h.start("probe")
        await actor.wait_for(Phase.RUNNING)
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(actor.call, "sleep", "p1", {"seconds": 0.5})
            await trio.sleep(0.1)
            with pytest.raises(Busy) as info:
                await actor.call("echo", "p1", {})
            assert info.value.details == {"max_in_flight": 2}
        assert (await actor.call("echo", "p1", {})).value["property"] == "p1"


async def test_quarantine_revokes_the_plugin_token_at_once(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("probe")
        await actor.wait_for(Phase.RUNNING)
        token, _ = h.supervisor.tokens.issue("probe", [], ["p1"], 60)
        h.supervisor.tokens.verify(token, "probe")
        actor.quarantine("operator says so")
        await actor.wait_for(Phase.QUARANTINED)
        with pytest.raises(TokenInvalid) as info:
            h.supervisor.tokens.verify(token, "probe")
        assert info.value.details["reason"] == "revoked"


async def test_log_floods_are_bounded(tmp_path):
    config = msgspec.structs.replace(FAST, log_records_per_s=50, log_lines_kept=1000)
    async with harness(tmp_path, config) as h:
        actor = await h.start("probe")
        await actor.wait_for(Phase.RUNNING)
        started = trio.current_time()
        await actor.call("chatter", "p1", {"count": 500})
        await trio.sleep(1.1)
        await actor.call("chatter", "p1", {"count": 1})
        await eventually(lambda: any("log records dropped" in ln.message for ln in actor.logs))
        seconds = trio.current_time() - started
        kept = [ln for ln in actor.logs if ln.message.startswith("chatter")]
        # at most 50 per 1 s window (a loaded machine may spread the burst over a few windows)
        assert 50 <= len(kept) <= 50 * (int(seconds) + 2)
        assert len(kept) < 500
        assert actor.phase is Phase.RUNNING


async def test_an_actor_bug_fails_closed(tmp_path):
    async with harness(tmp_path) as h:
        actor = await h.start("probe")
        await actor.wait_for(Phase.RUNNING)
        pid = actor.pid

        def broken(event, now, rand):
            raise RuntimeError("policy bug")

        actor.policy.step = lambda state, event, now, rand: broken(event, now, rand)
        actor.stop()
        with trio.fail_after(5):
            await actor.wait_for(Phase.QUARANTINED)
        assert actor.state.rule == "internal_error" and "policy bug" in actor.state.reason
        with pytest.raises(WorkerUnavailable):
            await actor.call("echo", "p1", {})
        await eventually(lambda: actor._gen.spawned.process.returncode is not None)
        assert h.supervisor.tokens.generation("probe") == 1
        assert pid is not None


async def seen(actor, prop):
    return (await actor.call("events.seen", prop, {})).value["events"]


async def test_events_reach_subscribers_of_the_property_only(tmp_path):
    async with harness(tmp_path) as h:
        alpha = await h.start("alpha", properties=("p1",))
        beta = await h.start("beta", properties=("p2",))
        gamma = await h.start("gamma", properties=("p1", "p2"))
        for actor in (alpha, beta, gamma):
            await actor.wait_for(Phase.RUNNING)
        lane = h.platform.events
        assert lane.publish("camera.motion", "p1", {"camera": "front"}, source="operator:root") == 2
        assert lane.publish("recording.created", "p1", {}, source="operator:root") == 0
        with trio.fail_after(5):
            while len(await seen(gamma, "p1")) < 1 or len(await seen(alpha, "p1")) < 1:
                await trio.sleep(0.02)
        assert await seen(beta, "p2") == []
        assert await seen(alpha, "p1") == [["camera.motion", "p1", {"camera": "front"}]]
        # a plugin publishes a declared type: the others of that property get it, not itself
        assert (await alpha.call("tamper", "p1", {})).value == {"delivered": 1}
        with trio.fail_after(5):
            while len(await seen(gamma, "p1")) < 2:
                await trio.sleep(0.02)
        assert (await seen(gamma, "p1"))[1] == ["camera.tamper", "p1", {"by": "probe"}]
        assert len(await seen(alpha, "p1")) == 1
        with pytest.raises(RemoteError) as info:
            await alpha.call("tamper", "p1", {"type": "camera.motion"})  # not declared
        assert info.value.error_code == "forbidden"


async def test_a_subscriber_that_does_not_keep_up_loses_events_not_the_publisher(tmp_path):
    async with harness(tmp_path) as h:
        slow = await h.start("slow")
        await slow.wait_for(Phase.RUNNING)
        taken = [
            slow.deliver("camera.motion", "p1", {"hang": True}) for _ in range(EVENT_BACKLOG + 50)
        ]
        assert taken.count(True) == EVENT_BACKLOG and slow.events_dropped == 50
        assert (await slow.call("echo", "p1", {})).value["property"] == "p1"  # still serving
        await h.db.flush()
        assert any(e.type == "events_dropped" for e in records.list_events(h.db, "slow"))


async def test_a_worker_over_its_memory_limit_is_killed_as_a_crash(tmp_path):
    config = msgspec.structs.replace(FAST, memory_check_s=0.05)
    async with harness(tmp_path, config) as h:
        hog = await h.start("hog", memory_limit_mb=96)
        neighbour = await h.start("neighbour")
        await hog.wait_for(Phase.RUNNING)
        first_pid = hog.pid
        assert (await hog.call("hog", "p1", {"mb": 10})).value == {"held_mb": 10}
        with trio.fail_after(10):
            with contextlib.suppress(WorkerCrashed):
                await hog.call("hog", "p1", {"mb": 200})
            await hog.wait_for(Phase.BACKOFF)
        assert "resource limit" in hog.state.reason and "memory_limit is 96 MB" in hog.state.reason
        assert len(hog.state.crashes) == 1
        await hog.wait_for(Phase.RUNNING)
        assert hog.pid != first_pid
        await neighbour.wait_for(Phase.RUNNING)
        assert (await neighbour.call("echo", "p1", {})).value["property"] == "p1"


def hook(priority: int) -> dict:
    return {"hooks": {"snapshot.annotate": {"priority": priority, "timeout_ms": 2000}}}


async def test_hooks_run_in_priority_order_and_a_failing_one_is_skipped(tmp_path):
    async with harness(tmp_path) as h:
        low = await h.start("low", mode="hook_low", manifest=hook(1))
        await records.create_camera(h.db, "p1", "front", name="Front", source={"kind": "demo"})
        high = await h.start("high", mode="hook_high", manifest=hook(50))
        broken = await h.start("broken", mode="hook_fail", manifest=hook(99))
        other = await h.start("other", mode="hook_other", manifest=hook(70), properties=("p2",))
        viewer = await h.start("viewer", manifest=hook(10))  # joins, but never for its own calls
        for actor in (low, high, broken, other, viewer):
            await actor.wait_for(Phase.RUNNING)
        reply = await viewer.call("snapshot", "p1", {"camera": "front"})
        jpeg = reply.body
        assert jpeg[:2] == b"\xff\xd8"
        assert jpeg.index(b"hook_low") < jpeg.index(b"hook_high")  # high ran first, low after
        assert b"hook_other" not in jpeg  # serves another property
        await h.db.flush()
        failed = [e for e in records.list_events(h.db, "broken") if e.type == "hook_failed"]
        assert failed and "snapshot.annotate" in failed[0].reason
