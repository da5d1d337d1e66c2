"""The update catalog over real HTTP: a newer version in the catalog directory is offered in
the plugin list and detail, and one request upgrades to it through the pipeline."""

import trio

from pentarun.packages.builder import pack

from ..packages.factory import definition, source
from .server import Server, wait_state

ZIP = {"Content-Type": "application/zip"}


def demo(version: str) -> bytes:
    return pack(source(definition(version=version)), publisher="tests")


async def test_the_catalog_offers_a_newer_version_and_one_request_upgrades(tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "demo-1.1.0.zip").write_bytes(demo("1.1.0"))
    (catalog / "demo-0.9.0.zip").write_bytes(demo("0.9.0"))  # older: never offered
    env = {"PENTARUN_INSTALL__CATALOG_DIR": str(catalog)}
    server = await Server(tmp_path / "var", env=env).started()
    try:
        async with server.client() as client:
            assert (
                await client.post("/api/plugins", content=demo("1.0.0"), headers=ZIP)
            ).status_code == 202
            await wait_state(client, "demo", "VERIFIED")
            listed = (await client.get("/api/plugins")).json()["plugins"]
            assert listed[0]["update_available"] == {"version": "1.1.0", "file": "demo-1.1.0.zip"}
            detail = (await client.get("/api/plugins/demo")).json()
            assert detail["update_available"]["version"] == "1.1.0"
            offered = (await client.get("/api/catalog")).json()
            assert offered["configured"] is True
            assert [(e["version"], e["newer"]) for e in offered["entries"]] == [
                ("0.9.0", False),
                ("1.1.0", True),
            ]

            upgraded = await client.post("/api/plugins/demo/upgrade")
            assert upgraded.status_code == 202, upgraded.text
            with trio.fail_after(60):
                with_new = await wait_state(client, "demo", "VERIFIED")
                while with_new["version"] != "1.1.0":
                    await trio.sleep(0.1)
                    with_new = await wait_state(client, "demo", "VERIFIED")
            assert with_new["update_available"] is None
            missing = await client.post("/api/plugins/demo/upgrade", json={"version": "7.0.0"})
            assert missing.status_code == 404
    finally:
        server.stop()
