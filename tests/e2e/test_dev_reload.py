"""`pentarun plugin dev` against a real server: a reload that goes live, one that rolls back,
the watcher picking up a saved file, and a server that takes no development builds."""

import subprocess
import sys

import trio

from pentarun.packages import authoring

from .server import Server, wait_state

DEV = {"PENTARUN_INSTALL__ALLOW_DEV_BUILDS": "true"}


def dev_command(server: Server, root, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pentarun", "plugin", "dev", str(root),
        "--server", server.url, "--token-file", str(server.data_dir / "admin.token"),
        *extra,
    ]  # fmt: skip


async def run(command: list[str]) -> tuple[int, str]:
    """Exit code and everything it printed (it speaks on stderr)."""
    done = await trio.to_thread.run_sync(
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    )
    return done.returncode, done.stdout + done.stderr


def watch(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )


async def test_a_reload_goes_live_a_broken_one_rolls_back_and_a_save_is_picked_up(tmp_path):
    root = authoring.scaffold("devcam", tmp_path)
    server = await Server(tmp_path / "var", env=DEV).started()
    try:
        async with server.client() as client:
            code, said = await run(dev_command(server, root, "--once"))
            assert code == 0, said
            assert "live: devcam 0.1.0+dev." in said
            detail = await wait_state(client, "devcam", "VERIFIED")
            live = detail["version"]
            assert detail["install"]["dev_build"] is True

            worker = root / "worker" / "plugin_worker.py"
            good = worker.read_text()
            worker.write_text(good.replace('name = params.get("name", "world")', "name = 1 / 0"))
            code, said = await run(dev_command(server, root, "--once"))
            assert code == 1, said
            assert "rolled back" in said and "greets" in said
            assert (await client.get("/api/plugins/devcam")).json()["version"] == live

            worker.write_text(good)
            watcher = watch(dev_command(server, root, "--interval", "0.1"))
            try:
                with trio.fail_after(60):
                    while (await client.get("/api/plugins/devcam")).json()["version"] == live:
                        await trio.sleep(0.1)
            finally:
                watcher.terminate()
                watcher.wait(10)

            events = (await client.get("/api/plugins/devcam/events")).json()["events"]
            timeline = sorted(
                (e for e in events if e["type"] == "dev_reload"), key=lambda e: e["at"]
            )
            reloads = [e["detail"] for e in timeline]
            assert [r["success"] for r in reloads] == [True, False, True]
            failed = next(r for r in reloads if not r["success"])
            assert failed["previous"] == live and failed["state"] == "REJECTED"
    finally:
        server.stop()


async def test_a_server_takes_no_development_build_unless_allowed(tmp_path):
    root = authoring.scaffold("devcam", tmp_path)
    server = await Server(tmp_path / "var").started()
    try:
        code, said = await run(dev_command(server, root, "--once"))
        assert code == 1 and "upload refused (403 dev_builds_disabled)" in said
    finally:
        server.stop()
