"""Uncaught handler exceptions are the caller's failure: they count in the plugin's error rate,
never toward its quarantine (a real worker process, the real SDK and supervisor)."""

import pytest
import trio
import trio.testing

from pentarun.errors import RemoteError
from pentarun.supervisor.policy import Phase

from .conftest import FAST, eventually, harness


async def test_an_outside_caller_cannot_quarantine_a_plugin_by_making_it_raise(tmp_path):
    calls = 2 * FAST.error_storm_count  # each logs two ERROR records: four storms' worth
    async with harness(tmp_path) as h:
        actor = await h.start("victim")
        with trio.fail_after(10):
            await actor.wait_for(Phase.RUNNING)
        for i in range(calls):
            with pytest.raises(RemoteError) as info:
                await actor.call("raise", "p1", {"input": i})
            assert (info.value.error_code, info.value.http_status) == ("handler_error", 500)
            assert info.value.message == f"ValueError: bad input {i}"
        last = f"bad input {calls - 1}"  # the SDK's record of the last call's traceback
        await eventually(lambda: any(last in line.message for line in actor.logs))
        await trio.testing.wait_all_tasks_blocked()  # every record has reached the policy
        assert actor.state.phase is Phase.RUNNING
        assert actor.state.restarts == 0
        errors = [line for line in actor.logs if line.level == "ERROR"]
        assert len(errors) == 2 * calls
        assert (await actor.call("echo", "p1", {"ok": 1})).value["params"] == {"ok": 1}
        assert actor.stats.failed == calls  # counted in the error rate and tier
