from typing import Any

from pentarun.sdk.context import KEYS_PAGE, CoreClient, PluginStore


async def test_store_keys_returns_every_page():
    stored = sorted(f"k{i:05d}" for i in range(2 * KEYS_PAGE + 7))
    asked: list[dict[str, Any]] = []

    async def send(property_id: str, name: str, params: dict[str, Any]) -> Any:
        assert (property_id, name) == ("p1", "store.keys")
        asked.append(params)
        after, limit = params["after"], params["limit"]
        return [k for k in stored if k > after][:limit]

    keys = await PluginStore(CoreClient(send, "p1")).keys()
    assert keys == stored
    assert [a["after"] for a in asked] == ["", stored[KEYS_PAGE - 1], stored[2 * KEYS_PAGE - 1]]
