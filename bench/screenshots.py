"""Screenshots of the operator console for the README (docs/console-*.png). Not run in CI.

    .venv/bin/python bench/screenshots.py [--out docs]

Starts `pentarun serve --demo` on a fresh data dir (the bundled plugins installed through the
real pipeline, a demo property with two cameras), makes some traffic so the charts have
something to show, then drives the system's headless chromium (tests/e2e/browser.py) through
the main pages: the plugins table, a plugin page, the upload with its live pipeline, the
approval modal, a refused package, a test run, a property with its cameras and keys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pentarun.packages.builder import pack, read_tree  # noqa: E402
from tests.e2e.browser import Browser  # noqa: E402
from tests.packages.factory import definition, package  # noqa: E402

CAMWATCH = ROOT / "tests" / "e2e" / "plugins" / "camwatch"


def start(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    data_dir.mkdir(parents=True)
    env = {**os.environ, "PENTARUN_SUPERVISOR__HEALTH_INTERVAL_S": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pentarun", "serve", "--demo", "--data-dir", str(data_dir),
         "--admin-bind", "127.0.0.1:0", "--log-level", "WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    run_file = data_dir / "run.json"
    deadline = time.monotonic() + 300
    while not run_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the demo server did not start")
        time.sleep(0.1)
    url = json.loads(run_file.read_text())["admin_url"]
    return process, url, (data_dir / "admin.token").read_text().strip()


def traffic(url: str, token: str) -> None:
    """Calls through the admin API, so the latency chart and the tiers have data."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for _ in range(60):
            client.post(
                "/api/plugins/hello/call",
                json={"handler": "hello", "property": "demo", "params": {"name": "Ada"}},
            )
            client.post(
                "/api/plugins/homeassistant/call",
                json={"handler": "ha.cameras.list", "property": "demo", "params": {}},
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pentarun-shots-"))
    process, url, token = start(tmp / "var")
    bundle = tmp / "camwatch-1.0.0.zip"
    bundle.write_bytes(pack(read_tree(CAMWATCH), "pentavision"))
    refused = tmp / "broken-0.1.0.zip"
    refused.write_bytes(
        package(definition(key="broken", traits=["admin"], resources={"memory_limit": 1}))
    )
    browser = Browser(url)
    out = args.out
    try:
        traffic(url, token)
        time.sleep(25)  # let a few health checks land for the chart (10 s apart)
        browser.driver.set_window_size(1440, 900)
        browser.open("/signin")
        browser.fill("#token", token)
        browser.click("Sign in")
        browser.wait_text("#feed-status", "Live")
        browser.screenshot(out / "console-plugins.png")

        browser.driver.set_window_size(1440, 2400)
        browser.open("/plugins/homeassistant")
        browser.wait_text("#log-status", "Live")
        browser.screenshot(out / "console-plugin.png")

        browser.driver.set_window_size(1440, 1000)
        browser.open("/upload")
        browser.css("#package-file").send_keys(str(bundle))
        browser.click("Upload", "#upload-form")
        browser.css('#upload-progress [data-progress-state="DEPENDENCIES_PENDING"]')
        browser.click("Review and approve", "#upload-progress")
        browser.visible("#modal")
        browser.screenshot(out / "console-approval.png")
        browser.click("Approve", "#modal")
        browser.css('#upload-progress [data-progress-state="VERIFIED"]')
        browser.screenshot(out / "console-upload.png")

        browser.open("/upload")
        browser.css("#package-file").send_keys(str(refused))
        browser.click("Upload", "#upload-form")
        browser.wait_text("#upload-problems", "problem")
        browser.screenshot(out / "console-upload-refused.png")

        browser.driver.set_window_size(1440, 1600)
        browser.open("/plugins/camwatch")
        browser.css("#tests a[href*='/tests/']").click()
        browser.wait_text("section.gate h2", "Recovery gate")
        browser.screenshot(out / "console-test-run.png")

        browser.driver.set_window_size(1440, 1300)
        browser.open("/properties/demo")
        browser.wait_text("#cameras", "Front door")
        browser.screenshot(out / "console-property.png")
    finally:
        browser.quit()
        process.terminate()
        process.wait(30)
    print("\n".join(str(p) for p in sorted(out.glob("console-*.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
