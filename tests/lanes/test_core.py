"""CoreApi: the checks before a core call runs, typed params for handlers, refusals audited
with a risk score. A real SQLite store; no worker processes."""

import time
from contextlib import asynccontextmanager

import msgspec
import pytest

from pentarun.config import StorageConfig, SupervisorConfig
from pentarun.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PentarunError,
    PropertyNotAssigned,
    ScopeDenied,
    StoreFull,
    TokenInvalid,
)
from pentarun.ipc.messages import CoreCall
from pentarun.lanes.calls import (
    CONTRACTS,
    MAX_KEYS_PAGE,
    MAX_STATE_KEY,
    MAX_STATE_KEYS,
    EventsPublishParams,
    Refusal,
    refusal_risk,
)
from pentarun.lanes.core import CoreApi
from pentarun.lanes.plugins import PluginCalls
from pentarun.lanes.storage import StorageLane
from pentarun.security import ha_keys
from pentarun.security.scopes import SCOPES
from pentarun.security.stream_tokens import StreamTokens
from pentarun.security.tokens import PluginTokens
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.directory import Directory

from .test_calls import SAMPLES

PLUGIN = "probe"
ALL_SCOPES = sorted(SCOPES)


class Core:
    """A CoreApi over a fresh store: property `pa` (camera `front`) for the plugin, `pb` not."""

    def __init__(self, api, db, tokens):
        self.api, self.db, self.tokens = api, db, tokens
        self.published: list[EventsPublishParams] = []
        self.hooked: list[tuple] = []

    def token(self, scopes=ALL_SCOPES, properties=("pa",), **kw):
        return self.tokens.issue(PLUGIN, list(scopes), list(properties), 60, **kw)[0]

    async def call(self, name, params=None, *, prop="pa", token=None):
        token = self.token() if token is None else token
        return await self.api.handle(PLUGIN, CoreCall(1, token, prop, name, params or {}))

    async def refusals(self, type_="security.core_call_refused"):
        await self.db.flush()
        return records.list_audit(self.db, plugin=PLUGIN, type_=type_)


@asynccontextmanager
async def core(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        for prop in ("pa", "pb"):
            await records.create_property(db, prop, f"property {prop}")
        await records.create_camera(db, "pa", "front", name="Front", source={"kind": "demo"})
        await records.create_camera(db, "pb", "back", name="Back", source={"kind": "demo"})
        tokens = PluginTokens()
        holder: list[Core] = []

        async def hook_runner(name, prop, payload, caller):
            holder[0].hooked.append((name, prop, caller))
            return payload

        api = CoreApi(db, tokens, StreamTokens(b"s" * 32), hook_runner=hook_runner)
        c = Core(api, db, tokens)
        holder.append(c)

        async def publish(r, p: EventsPublishParams) -> int:
            if p.event_type == "camera.secret":
                raise r.refuse(Forbidden("not declared"))
            c.published.append(p)
            return 1

        api.register("events.publish", "events:publish", publish)
        api.register("plugins.call", "plugins:call", PluginCalls(db, Directory(), 5).handle)
        for name, fn in StorageLane(tmp_path / "storage", StorageConfig()).handlers().items():
            api.register(name, CONTRACTS[name].scope, fn)
        yield c


async def test_calls_run_with_typed_params_confined_to_their_property(tmp_path):
    async with core(tmp_path) as c:
        assert await c.call("store.set", {"key": "k", "value": [1, {"a": 2}]}) is None
        assert await c.call("store.get", {"key": "k"}) == {"found": True, "value": [1, {"a": 2}]}
        assert await c.call("store.keys") == ["k"]
        assert await c.call("store.delete", {"key": "k"}) is None
        assert await c.call("store.get", {"key": "k"}) == {"found": False, "value": None}
        assert await c.call("properties.get") == {"id": "pa", "name": "property pa"}
        cameras = await c.call("cameras.list")
        assert [cam["id"] for cam in cameras] == ["front"]
        assert (await c.call("cameras.get", {"camera": "front"}))["name"] == "Front"
        with pytest.raises(NotFound):
            await c.call("cameras.get", {"camera": "back"})  # pb's camera: as if unknown
        jpeg = await c.call("cameras.snapshot", {"camera": "front"})
        assert jpeg[:2] == b"\xff\xd8"
        assert c.hooked == [("snapshot.annotate", "pa", PLUGIN)]
        assert await c.call("events.publish", SAMPLES["events.publish"]) == 1
        assert c.published == [EventsPublishParams(event_type="camera.tamper", data={"by": "x"})]
        assert await c.refusals() == []


async def test_stream_tokens_are_issued_and_verified_for_the_calls_property(tmp_path):
    async with core(tmp_path) as c:
        key, _ = await ha_keys.create_key(c.db, "pa", "ha")
        caller = c.api.streams.sign_caller(key.id, "pa")
        issued = await c.call(
            "streams.token", {"camera": "front", "stream": None, "ttl_s": 30, "caller": caller}
        )
        assert issued["expires_in"] == 30
        claims = await c.call("streams.verify", {"token": issued["token"], "camera": "front"})
        assert (claims["prop"], claims["cam"], claims["stream"]) == ("pa", "front", "main")
        other = c.api.streams.issue("pb", "back", "main", "mjpeg", key_id=key.id).token
        with pytest.raises(NotFound):
            await c.call("streams.verify", {"token": other})
        await records.revoke_ha_key(c.db, key.id)
        with pytest.raises(TokenInvalid):  # a token dies with its key
            await c.call("streams.verify", {"token": issued["token"], "camera": "front"})


@pytest.mark.parametrize("name", sorted(CONTRACTS))
async def test_every_call_refuses_an_unknown_parameter_by_name_and_audits_it(tmp_path, name):
    async with core(tmp_path) as c:
        with pytest.raises(BadRequest) as info:
            await c.call(name, {**SAMPLES[name], "bogus": 1})
        assert info.value.details["reason"] == "unknown_parameter"
        assert "'bogus'" in info.value.message
        [row] = await c.refusals()
        assert row.detail["refusal"] == "bad_parameters" and row.detail["call"] == name
        assert row.risk_score == refusal_risk(Refusal.BAD_PARAMETERS, CONTRACTS[name].scope) > 0
        assert c.published == []


async def test_a_parameter_naming_another_property_is_a_cross_property_attempt(tmp_path):
    async with core(tmp_path) as c:
        with pytest.raises(BadRequest) as info:
            await c.call("cameras.list", {"property": "pb"})
        assert "'property'" in info.value.message and "takes none" in info.value.message
        [row] = await c.refusals("security.cross_property_attempt")
        assert row.property == "pa" and row.detail["named_property"] == "pb"
        assert row.risk_score == refusal_risk(Refusal.CROSS_PROPERTY_PARAMETER) >= 70
        assert row.actor == f"plugin:{PLUGIN}"
        with pytest.raises(BadRequest):
            await c.call("store.get", {"key": "k", "property_id": "pb"})
        assert len(await c.refusals("security.cross_property_attempt")) == 2
        # naming its own property is only a parameter the call does not take
        with pytest.raises(BadRequest):
            await c.call("cameras.list", {"property": "pa"})
        [own] = await c.refusals()
        assert own.detail["refusal"] == "bad_parameters"
        assert len(await c.refusals("security.cross_property_attempt")) == 2


async def _refused_with(c, expected, **call):
    with pytest.raises(PentarunError) as info:
        await c.call(**call)
    assert type(info.value) is expected
    [row] = await c.refusals()
    return row


@pytest.mark.parametrize(
    ("case", "expected", "refusal"),
    [
        ("missing token", TokenInvalid, Refusal.STALE_TOKEN),
        ("forged token", TokenInvalid, Refusal.FORGED_TOKEN),
        ("expired token", TokenInvalid, Refusal.STALE_TOKEN),
        ("revoked token", TokenInvalid, Refusal.STALE_TOKEN),
        ("another plugin's token", TokenInvalid, Refusal.FORGED_TOKEN),
        ("unassigned property", PropertyNotAssigned, Refusal.PROPERTY_NOT_ASSIGNED),
        ("missing scope", ScopeDenied, Refusal.SCOPE_DENIED),
        ("unknown call", NotFound, Refusal.UNKNOWN_CALL),
        ("mistyped parameter", BadRequest, Refusal.BAD_PARAMETERS),
    ],
)
async def test_every_refusal_is_audited_with_a_risk_score(tmp_path, case, expected, refusal):
    async with core(tmp_path) as c:
        call = {"name": "cameras.get", "params": {"camera": "front"}}
        if case == "missing token":
            call["token"] = ""
        elif case == "forged token":
            call["token"] = PluginTokens().issue(PLUGIN, ALL_SCOPES, ["pa"], 60)[0]
        elif case == "expired token":
            call["token"] = c.token(now=time.time() - 120)
        elif case == "revoked token":
            call["token"] = c.token()
            c.tokens.revoke(PLUGIN)
        elif case == "another plugin's token":
            call["token"] = c.tokens.issue("other", ALL_SCOPES, ["pa"], 60)[0]
        elif case == "unassigned property":
            call["prop"] = "pb"
        elif case == "missing scope":
            call["token"] = c.token(scopes=["properties:read"])
        elif case == "unknown call":
            call["name"] = "recordings.delete_all"
        elif case == "mistyped parameter":
            call["params"] = {"camera": 42}
        row = await _refused_with(c, expected, **call)
        assert row.detail["refusal"] == refusal.value
        assert row.risk_score > 0
        scope = (
            "cameras:read" if refusal in (Refusal.SCOPE_DENIED, Refusal.BAD_PARAMETERS) else None
        )
        assert row.risk_score == refusal_risk(refusal, scope)
        assert row.plugin == PLUGIN and row.actor == f"plugin:{PLUGIN}"
        assert row.property == call.get("prop", "pa")


async def test_checks_run_in_order_token_property_call_scope_params(tmp_path):
    async with core(tmp_path) as c:
        narrow = c.token(scopes=[])
        with pytest.raises(TokenInvalid):  # a bad token is refused whatever else is wrong
            await c.call("nope", {"bogus": 1}, prop="pb", token="x")
        with pytest.raises(PropertyNotAssigned):
            await c.call("nope", {"bogus": 1}, prop="pb", token=narrow)
        with pytest.raises(NotFound):
            await c.call("nope", {"bogus": 1}, token=narrow)
        with pytest.raises(ScopeDenied):
            await c.call("cameras.list", {"property": "pb"}, token=narrow)
        kinds = [r.detail["refusal"] for r in reversed(await c.refusals())]
        assert kinds == ["forged_token", "property_not_assigned", "unknown_call", "scope_denied"]


async def test_a_handlers_own_permission_refusal_is_audited(tmp_path):
    async with core(tmp_path) as c:
        with pytest.raises(Forbidden):
            await c.call("events.publish", {"type": "camera.secret"})
        [row] = await c.refusals()
        assert row.detail["refusal"] == "forbidden" and row.detail["scope"] == "events:publish"
        assert row.risk_score == refusal_risk(Refusal.FORBIDDEN, "events:publish")


async def test_handler_results_that_are_not_refusals_are_not_audited(tmp_path):
    async with core(tmp_path) as c:
        with pytest.raises(NotFound):
            await c.call("cameras.get", {"camera": "nowhere"})
        assert await c.refusals() == []


async def test_worker_chosen_text_is_bounded_in_audit_rows(tmp_path):
    async with core(tmp_path) as c:
        with pytest.raises(NotFound):
            await c.call("x" * 100_000)
        with pytest.raises(PropertyNotAssigned):
            await c.call("store.keys", prop="p" * 100_000)
        rows = await c.refusals()
        assert all(len(r.property) <= 200 and len(r.detail["call"]) <= 64 for r in rows)
        assert all(len(r.detail["message"]) < 300 for r in rows)


def test_register_only_binds_declared_calls_with_their_scope():
    api = CoreApi(None, PluginTokens(), StreamTokens(b"s" * 32))

    async def fn(r, p):
        return None

    with pytest.raises(ValueError, match="not in CONTRACTS"):
        api.register("plugins.nothing", "plugins:call", fn)
    with pytest.raises(ValueError, match="not in CONTRACTS"):
        api.register("plugins.call", "events:publish", fn)
    with pytest.raises(ValueError, match="not in CONTRACTS"):
        api.register("events.publish", None, fn)
    api.register("events.publish", "events:publish", fn)


# --- the plugin's store is bounded --------------------------------------------------------


async def _fill(db, count, prop="pa"):
    """`count` keys k00000.. for the plugin in `prop`, written in one transaction."""
    rows = [(PLUGIN, prop, f"k{i:05d}", b"\xc0", 0.0) for i in range(count)]
    await db.write(
        lambda conn: conn.executemany(
            "INSERT INTO plugin_state (plugin_key, property_id, key, value, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    )


async def test_store_keys_answers_pages_in_key_order(tmp_path):
    async with core(tmp_path) as c:
        await _fill(c.db, MAX_KEYS_PAGE + 5)
        first = await c.call("store.keys")  # what `ctx.store.keys()` asks: the first page
        assert len(first) == MAX_KEYS_PAGE and first == sorted(first)
        rest = await c.call("store.keys", {"after": first[-1]})
        assert rest == [f"k{i:05d}" for i in range(MAX_KEYS_PAGE, MAX_KEYS_PAGE + 5)]
        two = await c.call("store.keys", {"after": "k00003", "limit": 2})
        assert two == ["k00004", "k00005"]
        assert await c.call("store.keys", {"after": rest[-1]}) == []
        for bad in ({"limit": 0}, {"limit": MAX_KEYS_PAGE + 1}, {"after": "k" * 300}):
            with pytest.raises(BadRequest):
                await c.call("store.keys", bad)


async def test_a_plugin_holds_at_most_max_state_keys_per_property(tmp_path):
    async with core(tmp_path) as c:
        await _fill(c.db, MAX_STATE_KEYS)
        with pytest.raises(StoreFull) as info:
            await c.call("store.set", {"key": "one-more", "value": 1})
        error = info.value
        assert (error.http_status, error.error_code) == (409, "store_full")
        assert error.details["limit"] == MAX_STATE_KEYS
        assert await c.call("store.get", {"key": "one-more"}) == {"found": False, "value": None}
        # a key it already holds can still be replaced; one deleted makes room for a new one
        assert await c.call("store.set", {"key": "k00000", "value": 2}) is None
        assert await c.call("store.delete", {"key": "k00001"}) is None
        assert await c.call("store.set", {"key": "one-more", "value": 1}) is None
        with pytest.raises(StoreFull):
            await c.call("store.set", {"key": "two-more", "value": 1})
        # the bound is per property
        assert (
            await c.call(
                "store.set",
                {"key": "k", "value": 1},
                prop="pb",
                token=c.token(properties=("pa", "pb")),
            )
            is None
        )
        assert await c.refusals() == []  # a quota, not a security refusal


def test_a_page_of_keys_always_fits_an_ipc_frame():
    widest = ["\U0010ffff" * MAX_STATE_KEY] * MAX_KEYS_PAGE  # 4 bytes a character in UTF-8
    reply = msgspec.msgpack.encode(widest)
    assert len(reply) < SupervisorConfig().max_frame_bytes // 4


async def test_a_refusal_message_is_clipped_in_the_audit_row(tmp_path):
    async with core(tmp_path) as c:

        async def chatty(r, p):
            raise r.refuse(Forbidden("no: " + "x" * 100_000))

        c.api.register("events.publish", "events:publish", chatty)
        with pytest.raises(Forbidden):
            await c.call("events.publish", {"type": "camera.tamper"})
        [row] = await c.refusals()
        assert row.detail["message"].startswith("no: x") and len(row.detail["message"]) <= 300
