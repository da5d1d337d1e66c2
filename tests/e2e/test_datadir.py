"""One server per data dir (SPEC §10), with real processes."""

import json
import sys

import trio

from .server import Server


async def test_a_second_server_on_a_locked_data_dir_exits_with_one_line_and_touches_nothing(
    tmp_path,
):
    data_dir = tmp_path / "var"
    first = await Server(data_dir).started()
    try:
        before = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
        with trio.fail_after(60):
            second = await trio.run_process(
                [sys.executable, "-m", "pentarun", "serve", "--data-dir", str(data_dir),
                 "--admin-bind", "127.0.0.1:0"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
        assert second.returncode == 1
        lines = (second.stdout + second.stderr).decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert "in use by another pentarun server" in lines[0]
        assert f"pid {first.process.pid}" in lines[0]
        after = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
        assert after == before  # nothing written, nothing removed
        assert json.loads((data_dir / "run.json").read_text())["pid"] == first.process.pid
        async with first.client() as client:
            assert (await client.get("/healthz")).status_code == 200
    finally:
        first.stop()
