"""The escape corpus: a plugin with no scopes tries every way around the lanes, inside the real
sandbox (bubblewrap, seccomp, cgroups), one test per probe. None may get through."""

import contextlib
import os
import socket
from pathlib import Path

import msgspec
import pytest
import trio

from pentarun.config import SecurityConfig
from pentarun.errors import WorkerCrashed, WorkerUnavailable
from pentarun.supervisor.policy import Phase

from .conftest import FAST, PLUGINS, eventually, harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the corpus runs as root, as CI does")

SECRETS = ("admin.token", "stream.secret", "pentarun.db")
# health probes would time out while the CPU probe is throttled to its quota (and restart it)
CORPUS = msgspec.structs.replace(FAST, health_interval_s=60.0)


async def escape(tmp_path: Path, probe: str, arg: object = None) -> dict:
    async with harness(tmp_path, CORPUS, sandboxed=True) as h:
        actor = await h.start("hostile", plugin="hostile")
        await actor.wait_for(Phase.RUNNING)
        reply = await actor.call("escape", "p1", {"probe": probe, "arg": arg}, 20.0)
        return reply.value


def plant_secrets(tmp_path: Path) -> None:
    for name in SECRETS[:2]:
        (tmp_path / name).write_text("secret")


@pytest.mark.parametrize("name", SECRETS)
async def test_the_servers_secrets_and_database_are_out_of_sight(tmp_path, name):
    plant_secrets(tmp_path)
    result = await escape(tmp_path, "read", str(tmp_path / name))
    assert not result["escaped"], result["detail"]


async def test_other_plugins_code_and_data_are_out_of_sight(tmp_path):
    other = tmp_path / "plugin-data" / "other"
    other.mkdir(parents=True)
    (other / "state").write_text("theirs")
    for path in (other / "state", PLUGINS / "probe" / "worker" / "plugin_worker.py"):
        result = await escape(tmp_path / path.name, "read", str(path))
        assert not result["escaped"], result["detail"]


async def test_its_own_verified_code_is_read_only(tmp_path):
    result = await escape(tmp_path, "own_code")
    assert not result["escaped"], result["detail"]


async def test_the_servers_data_dir_is_not_writable(tmp_path):
    result = await escape(tmp_path, "write", str(tmp_path / "planted"))
    assert not result["escaped"] and not (tmp_path / "planted").exists()


async def test_its_private_data_dir_is_writable_and_persists(tmp_path):
    result = await escape(tmp_path, "write", "/data/kept")
    assert result["escaped"]  # here "escaped" only means the write worked: it is its own dir
    assert (tmp_path / "plugin-data" / "hostile" / "kept").exists()


async def test_the_server_cannot_be_signalled(tmp_path):
    result = await escape(tmp_path, "signal", os.getpid())
    assert not result["escaped"], result["detail"]


async def test_the_servers_proc_is_out_of_sight(tmp_path):
    result = await escape(tmp_path, "read", f"/proc/{os.getpid()}/environ")
    assert not result["escaped"], result["detail"]
    result = await escape(tmp_path / "2", "proc")
    assert not result["escaped"], result["detail"]


async def test_the_admin_port_and_every_host_port_are_unreachable(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        result = await escape(tmp_path, "connect", listener.getsockname()[1])
    assert not result["escaped"], result["detail"]
    result = await escape(tmp_path / "2", "interfaces")
    assert not result["escaped"], result["detail"]  # only its own loopback: no route out


@pytest.mark.parametrize("probe", ["unshare", "mount", "ptrace"])
async def test_the_seccomp_filter_refuses_what_a_plugin_never_needs(tmp_path, probe):
    result = await escape(tmp_path, probe)
    assert not result["escaped"], result["detail"]


async def test_it_runs_unprivileged_without_core_dumps_and_with_bounded_files(tmp_path):
    result = await escape(tmp_path, "uid")
    assert not result["escaped"], result["detail"]
    result = await escape(tmp_path / "2", "limits")
    assert not result["escaped"], result["detail"]


async def test_a_fork_bomb_stops_at_the_process_limit_which_is_recorded(tmp_path):
    async with harness(tmp_path, CORPUS, sandboxed=True) as h:
        actor = await h.start("hostile", plugin="hostile")
        await actor.wait_for(Phase.RUNNING)
        reply = await actor.call("escape", "p1", {"probe": "fork_bomb", "arg": 100}, 20.0)
        assert not reply.value["escaped"], reply.value["detail"]
        await eventually(lambda: _logged(actor, "process limit"))
        assert (actor.usage()["forks_refused"] or 0) > 0  # in /api/bench too


async def test_children_die_with_the_worker(tmp_path):
    marker = f"pentarun-orphan-{os.getpid()}"
    async with harness(tmp_path, CORPUS, sandboxed=True) as h:
        actor = await h.start("hostile", plugin="hostile")
        await actor.wait_for(Phase.RUNNING)
        await actor.call("escape", "p1", {"probe": "orphan", "arg": marker})
        await eventually(lambda: _running(marker))  # once the shell exec'd it
        actor.kill()
        await eventually(lambda: not _running(marker))


async def test_the_cpu_quota_holds_and_is_recorded(tmp_path):
    async with harness(tmp_path, CORPUS, sandboxed=True) as h:
        actor = await h.start("hostile", plugin="hostile")
        await actor.wait_for(Phase.RUNNING)
        reply = await actor.call("escape", "p1", {"probe": "burn", "arg": 1.5}, 20.0)
        assert float(reply.value["detail"]) < 0.4  # cpu_limit 0.25 (two threads: 2.0 unbounded)
        await eventually(lambda: _logged(actor, "CPU quota"))
        assert (actor.usage()["cpu_throttled_periods"] or 0) > 0


async def test_memory_over_the_limit_is_killed_by_the_kernel_and_recorded(tmp_path):
    async with harness(tmp_path, CORPUS, sandboxed=True) as h:
        actor = await h.start("hostile", plugin="hostile")
        await actor.wait_for(Phase.RUNNING)
        with pytest.raises((WorkerCrashed, WorkerUnavailable)):
            await actor.call("escape", "p1", {"probe": "hog", "arg": 256}, 20.0)
        with trio.fail_after(10):
            await actor.wait_for(Phase.BACKOFF, Phase.STARTING, Phase.RUNNING)
        await eventually(
            lambda: "memory limit" in actor.state.reason or _logged(actor, "memory limit exceeded")
        )


def _logged(actor, text: str) -> bool:
    return any(text in line.message for line in actor.logs)


def _running(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


async def test_a_data_dir_over_its_bound_stops_the_worker_with_the_rule(tmp_path):
    config = msgspec.structs.replace(CORPUS, storage_check_s=0.1)
    bounded = SecurityConfig(sandbox_data_mb=8)
    async with harness(tmp_path, config, sandboxed=True, security=bounded) as h:
        actor = await h.start("hostile", plugin="hostile")
        await actor.wait_for(Phase.RUNNING)
        with contextlib.suppress(WorkerCrashed, WorkerUnavailable):  # stopped mid-write
            await actor.call("escape", "p1", {"probe": "fill", "arg": 16}, 20.0)
        await eventually(lambda: "storage" in actor.state.reason)
        assert _logged(actor, "storage limit exceeded")


async def test_a_worker_deaf_to_the_stop_request_gets_its_sigterm_inside_the_sandbox(tmp_path):
    # the stop request goes unread, then SIGTERM reaches the worker itself (in its own pid
    # namespace and session, where a process-group signal of the core does not reach)
    async with harness(tmp_path, sandboxed=True) as h:
        actor = await h.start("probe", "note_sigterm")
        with trio.fail_after(10):
            await actor.wait_for(Phase.RUNNING)
        await actor.call("deafen", "p1", {})
        actor.stop("test")
        with trio.fail_after(10):
            await actor.wait_for(Phase.STOPPED)
        noted = tmp_path / "plugin-data" / "probe" / "terminated"
        assert noted.read_text() == "SIGTERM"
