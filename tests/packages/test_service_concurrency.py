"""The install service when things overlap or break: operator actions during a release or a
probation attempt, an uninstall racing an upload, background tasks that fail, and test suites
requested faster than they run. Same fakes as test_service.py: no worker process starts here.
"""

import threading

import msgspec
import pytest
import trio

from pentarun.errors import Conflict
from pentarun.packages import service
from pentarun.registry import read_source_definition
from pentarun.store import records
from pentarun.supervisor.policy import Phase

from .factory import definition, package, source
from .fakes import world


def _empty(directory):
    return not directory.exists() or not any(directory.iterdir())


async def _release_held(w, *, probation):
    """An enabled plugin quarantined, its release (or probation attempt) suite held running."""
    await w.enabled()
    w.gates.hold = trio.Event()
    if probation:
        w.quarantined_by_policy(probation=True)
    else:
        await w.installs.quarantine("demo", "crashing", "op")
        await w.installs.release("demo", "op")
    await w.until(lambda: w.job().releasing and w.gates.running == 1)
    return w.job().on_probation


@pytest.mark.parametrize("probation", [False, True])
async def test_an_operator_quarantine_during_a_release_cancels_it(tmp_path, probation):
    async with world(tmp_path) as w:
        assert await _release_held(w, probation=probation) is probation
        run_id = records.installs_of(w.db, "demo")[-1].last_run_id
        await w.installs.quarantine("demo", "keep it off", "op")
        job = w.job()
        assert w.state() == "QUARANTINED" and job.running == "" and not job.releasing
        assert job.probation_due_at is None and not job.on_probation
        assert "keep it off" in job.reason
        await w.until(lambda: w.gates.running == 0)  # the suite was cancelled
        await w.until(lambda: records.test_run(w.db, run_id).status == "failed")
        w.gates.hold.set()
        await trio.sleep(0.2)  # nothing comes back to enable it
        assert w.state() == "QUARANTINED" and w.job().running == ""
        assert w.supervisor.directory.get("demo").phase is Phase.QUARANTINED
        assert w.installs.driver.probation_due(records.installs_of(w.db, "demo")[-1].id) is None
        await w.installs.release("demo", "op")  # an operator can still release it
        await w.installs.wait_settled("demo")
        assert w.state() == "VERIFIED"


@pytest.mark.parametrize("probation", [False, True])
async def test_a_disable_during_a_release_ends_disabled_not_running(tmp_path, probation):
    async with world(tmp_path) as w:
        await _release_held(w, probation=probation)
        starts = w.supervisor.directory.get("demo").starts
        await w.installs.disable("demo", [], "op")
        w.gates.hold.set()
        await w.installs.wait_settled("demo")
        assert w.state() == "DISABLED" and "disabled" in w.job().reason
        actor = w.supervisor.directory.get("demo")
        assert actor.starts == starts and actor.phase is not Phase.RUNNING
        assert "demo" not in w.ports.bound
        if probation:  # the attempt passed and is recorded as such
            (attempt,) = await w.events(kind="probation_attempt")
            assert attempt.detail["result"] == "passed"
        await w.installs.enable("demo", [], "op")  # the operator turns it back on
        assert w.state() == "ENABLED" and w.supervisor.directory.get("demo").starts == starts + 1


async def test_an_uninstall_racing_an_upload_leaves_nothing_behind(tmp_path, monkeypatch):
    """The upload writes its package while the uninstall waits for the plugin's lock."""
    writing, go_on = threading.Event(), threading.Event()
    write = service._write_file

    def slow_write(path, data):
        writing.set()
        go_on.wait(10)
        write(path, data)

    async with world(tmp_path) as w:
        await w.enabled()
        monkeypatch.setattr(service, "_write_file", slow_write)
        outcome = {}

        async def upload():
            try:
                await w.installs.upload(package(definition(version="1.1.0")), "op")
            except Exception as exc:
                outcome["upload"] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            await trio.to_thread.run_sync(writing.wait, 10)
            nursery.start_soon(w.installs.uninstall, "demo", "op")
            lock = w.installs.driver.lock("demo")
            await w.until(lambda: lock.statistics().tasks_waiting == 1)
            go_on.set()
        assert isinstance(outcome["upload"], Conflict), outcome
        assert "uninstalled" in str(outcome["upload"])
        assert records.installs_of(w.db, "demo") == [] and w.state() is None
        var = tmp_path / "var"
        assert _empty(var / "packages") and _empty(var / "plugins" / "demo")  # nothing orphaned


async def test_a_failing_quarantine_of_a_source_plugin_does_not_take_the_server_down(tmp_path):
    tree = tmp_path / "src"
    for name, data in source().items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    root, manifest = read_source_definition(tree)
    async with world(tmp_path) as w:
        await w.installs.run_from_source(root, manifest)
        w.ports.fail_close = True
        w.quarantined_by_policy(probation=False)

        async def recorded():
            return bool(await w.events(kind="install_error"))

        await w.until(recorded)
        (error,) = await w.events(kind="install_error")
        assert "would not close" in error.reason
        w.ports.fail_close = False
        await trio.sleep(0.05)  # the service is still serving
        assert w.installs.describe("demo") == {}


async def test_a_probation_timer_that_cannot_read_its_job_does_not_take_the_server_down(tmp_path):
    async with world(tmp_path, probation_s=1.0) as w:
        await w.enabled()
        w.quarantined_by_policy(probation=True)
        await w.until(lambda: w.job().probation_due_at is not None)
        row = records.installs_of(w.db, "demo")[-1]
        unreadable = {**msgspec.to_builtins(w.job()), "probation_attempts": "many"}
        await records.save_install(w.db, row.id, unreadable)

        async def recorded():
            return bool(await w.events(kind="install_error"))

        await w.until(recorded)
        (error,) = await w.events(kind="install_error")
        assert "probation" in error.reason


async def test_one_test_run_per_plugin_at_a_time(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        w.gates.hold = trio.Event()
        first = await w.installs.run_tests("demo", "op")
        with pytest.raises(Conflict, match=first) as refused:
            await w.installs.run_tests("demo", "op")
        assert refused.value.details["run_id"] == first
        assert len(await w.audit("plugin.tests_requested")) == 1
        w.gates.hold.set()
        await w.until(lambda: records.test_run(w.db, first).status == "passed")
        second = await w.installs.run_tests("demo", "op")
        await w.until(lambda: records.test_run(w.db, second).status == "passed")


async def test_a_release_under_way_counts_as_the_plugins_run(tmp_path):
    async with world(tmp_path) as w:
        await _release_held(w, probation=False)
        running = records.installs_of(w.db, "demo")[-1].last_run_id
        with pytest.raises(Conflict) as refused:
            await w.installs.run_tests("demo", "op")
        assert refused.value.details["run_id"] == running
        w.gates.hold.set()


async def test_concurrent_suites_are_bounded_server_wide(tmp_path):
    keys = ["demo", "demo-b", "demo-c"]
    async with world(tmp_path) as w:
        for key in keys:
            await w.enabled(package(definition(key=key, name=key)), key=key)
        w.gates.hold = trio.Event()
        runs = [await w.installs.run_tests(key, "op") for key in keys]
        await w.until(lambda: w.gates.running == 2)
        await trio.sleep(0.1)
        statuses = [records.test_run(w.db, run).status for run in runs]
        assert sorted(statuses) == ["queued", "running", "running"]
        assert w.gates.running == 2
        w.gates.hold.set()
        for run in runs:
            await w.until(lambda run=run: records.test_run(w.db, run).status == "passed")
        assert w.gates.most == 2


async def test_an_uninstall_cancels_the_plugins_test_run(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        w.gates.hold = trio.Event()
        run_id = await w.installs.run_tests("demo", "op")
        await w.until(lambda: w.gates.running == 1)
        await w.installs.uninstall("demo", "op")
        await w.until(lambda: w.gates.running == 0)
        await w.until(lambda: records.test_run(w.db, run_id).status == "failed")
