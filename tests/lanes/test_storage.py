"""The storage lane (`storage.*` core calls) and the store's byte quota: through a real CoreApi
over a real SQLite store and a real directory; no worker processes. The pure parts (names,
pages, the quota decision) with hypothesis."""

import errno
import os
from contextlib import asynccontextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.config import StorageConfig
from pentarun.errors import BadRequest, ScopeDenied, StorageFull, StoreFull
from pentarun.ipc.messages import CoreCall
from pentarun.lanes import storage
from pentarun.lanes.calls import CONTRACTS, MAX_STORAGE_FILE, MAX_STORAGE_NAME, decode_params
from pentarun.lanes.core import CoreApi
from pentarun.lanes.storage import (
    MARKER,
    StorageLane,
    Usage,
    admit,
    apply,
    filename_of,
    name_of,
    page,
)
from pentarun.security.scopes import SCOPES
from pentarun.security.stream_tokens import StreamTokens
from pentarun.security.tokens import PluginTokens
from pentarun.store import records
from pentarun.store.db import open_database

PLUGIN = "keeper"
KIB = 1024
DEFAULTS = StorageConfig()

# --- names --------------------------------------------------------------------------------------

SEGMENT_CHARS = "abcXYZ019_.-"
segment = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("aZ9_"),
    st.text(alphabet=SEGMENT_CHARS, max_size=12),
)
names = (
    st.lists(segment, min_size=1, max_size=6)
    .map("/".join)
    .filter(lambda n: len(n) <= MAX_STORAGE_NAME)
)


@given(names)
def test_a_name_is_one_safe_file_name_and_comes_back(name):
    filename = filename_of(name)
    assert "/" not in filename and "\0" not in filename
    assert filename not in (".", "..") and not filename.startswith(".")
    assert len(filename.encode()) <= 255
    assert name_of(filename) == name


@given(names, names)
def test_different_names_never_share_a_file(a, b):
    assert (filename_of(a) == filename_of(b)) == (a == b)


def test_the_lanes_own_files_are_never_names():
    assert name_of(MARKER) is None
    assert name_of(".tmp-abc123") is None
    assert name_of("..") is None


def decode(name, params):
    return decode_params(name, CONTRACTS[name], params)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../x",
        "a/../b",
        "/etc/passwd",
        "a//b",
        "a/",
        ".hidden",
        "a/.b",
        "-x",
        "a~b",
        "a\\b",
        "a b",
        "a\0b",
        "é",
        "a\n",
        "x" * (MAX_STORAGE_NAME + 1),
    ],
)
def test_unsafe_names_are_refused(bad):
    with pytest.raises(BadRequest):
        decode("storage.get", {"name": bad})


def test_safe_names_and_bounded_data_are_accepted():
    for good in ("a", "clips/2024-05-01.json", "_x/y.z-1", "x" * MAX_STORAGE_NAME):
        assert decode("storage.get", {"name": good}).name == good
    decode("storage.put", {"name": "a", "data": b"x" * MAX_STORAGE_FILE})
    with pytest.raises(BadRequest):
        decode("storage.put", {"name": "a", "data": b"x" * (MAX_STORAGE_FILE + 1)})
    with pytest.raises(BadRequest):
        decode("storage.list", {"limit": 0})


# --- pages and the quota decision ----------------------------------------------------------------


@given(st.dictionaries(names, st.integers(0, 10)), st.text(max_size=5), st.integers(1, 20))
def test_a_page_is_in_name_order_after_after(files, after, limit):
    got = page(files, after, limit)
    expected = sorted(n for n in files if n > after)[:limit]
    assert [e["name"] for e in got] == expected
    assert all(e["size"] == files[e["name"]] for e in got)


ops = st.lists(
    st.tuples(
        st.sampled_from(["p1", "p2"]), st.sampled_from("abcde"), st.none() | st.integers(0, 40)
    ),
    max_size=60,
)


@given(ops, st.integers(0, 100), st.integers(1, 4))
def test_the_running_count_is_exact_and_growth_never_passes_the_quota(steps, quota, max_files):
    """Random puts (a size) and deletes (None) against a model of the files: what is admitted
    keeps the plugin within its quota and each property within its file count."""
    usage, held = Usage(), {}
    for prop, name, size in steps:
        old = held.get((prop, name))
        if size is None:
            if old is not None:
                apply(usage, prop, old, None)
                del held[(prop, name)]
        elif admit(usage, prop, old, size, quota=quota, max_files=max_files) is None:
            apply(usage, prop, old, size)
            held[(prop, name)] = size
            assert size <= (old or 0) or usage.bytes <= quota
        assert usage.bytes == sum(held.values())
        for p in ("p1", "p2"):
            assert usage.files.get(p, 0) == sum(1 for (q, _) in held if q == p) <= max_files
        assert usage.bytes <= quota  # it started empty, and only shrinking passes a full quota


def test_a_refusal_says_what_is_used_and_needed():
    usage = Usage(bytes=90, files={"p1": 2})
    refusal = admit(usage, "p1", 10, 30, quota=100, max_files=5)
    assert (refusal.limit, refusal.used, refusal.limit_value, refusal.needed) == (
        "bytes",
        90,
        100,
        20,
    )
    assert admit(usage, "p1", 10, 20, quota=100, max_files=5) is None  # 100 fits exactly
    assert admit(Usage(bytes=500), "p1", 40, 30, quota=100, max_files=5) is None  # shrinks
    full = admit(Usage(files={"p1": 5}), "p1", None, 0, quota=100, max_files=5)
    assert full.limit == "files" and full.used == 5
    assert admit(Usage(files={"p1": 5}), "p1", 3, 3, quota=100, max_files=5) is None


# --- through the core API ------------------------------------------------------------------------


class Core:
    def __init__(self, api, db, tokens, lane):
        self.api, self.db, self.tokens, self.lane = api, db, tokens, lane

    def token(self, scopes=tuple(SCOPES), properties=("pa", "pb"), plugin=PLUGIN):
        return self.tokens.issue(plugin, list(scopes), list(properties), 60)[0]

    async def call(self, name, params=None, *, prop="pa", token=None, plugin=PLUGIN):
        token = self.token(plugin=plugin) if token is None else token
        return await self.api.handle(plugin, CoreCall(1, token, prop, name, params or {}))


@asynccontextmanager
async def core(tmp_path, config=DEFAULTS, **lane_options):
    async with open_database(tmp_path / "db.sqlite") as db:
        for prop in ("pa", "pb"):
            if records.get_property(db, prop) is None:  # a store opened again keeps them
                await records.create_property(db, prop, prop)
        lane = StorageLane(tmp_path / "storage", config, **lane_options)
        tokens = PluginTokens()
        api = CoreApi(db, tokens, StreamTokens(b"s" * 32), store_max_bytes=lane.store_max_bytes)
        for name, fn in lane.handlers().items():
            api.register(name, CONTRACTS[name].scope, fn)
        yield Core(api, db, tokens, lane)


def on_disk(tmp_path, plugin=PLUGIN):
    root = tmp_path / "storage" / plugin
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_files_are_put_read_listed_and_deleted_per_property(tmp_path):
    async with core(tmp_path) as c:
        assert await c.call("storage.get", {"name": "notes/a.txt"}) is None
        assert await c.call("storage.list") == []
        put = await c.call("storage.put", {"name": "notes/a.txt", "data": b"alpha"})
        assert put == {"name": "notes/a.txt", "size": 5}
        await c.call("storage.put", {"name": "b", "data": b""})
        await c.call("storage.put", {"name": "notes/a.txt", "data": b"other"}, prop="pb")
        assert await c.call("storage.get", {"name": "notes/a.txt"}) == b"alpha"
        assert await c.call("storage.get", {"name": "notes/a.txt"}, prop="pb") == b"other"
        assert await c.call("storage.get", {"name": "b"}) == b""
        assert await c.call("storage.list") == [
            {"name": "b", "size": 0},
            {"name": "notes/a.txt", "size": 5},
        ]
        assert await c.call("storage.list", {"after": "b", "limit": 1}) == [
            {"name": "notes/a.txt", "size": 5}
        ]
        assert on_disk(tmp_path) == [MARKER, "pa/b", "pa/notes~a.txt", "pb/notes~a.txt"]
        await c.call("storage.put", {"name": "notes/a.txt", "data": b"replaced"})
        assert await c.call("storage.get", {"name": "notes/a.txt"}) == b"replaced"
        assert await c.call("storage.delete", {"name": "notes/a.txt"}) is True
        assert await c.call("storage.delete", {"name": "notes/a.txt"}) is False
        assert await c.call("storage.get", {"name": "notes/a.txt"}) is None
        assert await c.call("storage.get", {"name": "notes/a.txt"}, prop="pb") == b"other"
        # another plugin sees none of it
        assert await c.call("storage.list", plugin="other") == []
        assert await c.call("storage.get", {"name": "b"}, plugin="other") is None


async def test_storage_needs_its_scopes_and_never_names_another_property(tmp_path):
    async with core(tmp_path) as c:
        reader = c.token(scopes=("storage:read",))
        with pytest.raises(ScopeDenied):
            await c.call("storage.put", {"name": "a", "data": b"x"}, token=reader)
        with pytest.raises(ScopeDenied):
            await c.call("storage.delete", {"name": "a"}, token=reader)
        assert await c.call("storage.list", token=reader) == []
        writer = c.token(scopes=("storage:write",))
        with pytest.raises(ScopeDenied):
            await c.call("storage.get", {"name": "a"}, token=writer)
        with pytest.raises(BadRequest):
            await c.call("storage.get", {"name": "a", "property": "pb"})
        await c.db.flush()
        [row] = records.list_audit(c.db, plugin=PLUGIN, type_="security.cross_property_attempt")
        assert row.detail["named_property"] == "pb"
        assert not (tmp_path / "storage" / PLUGIN / "pb").exists()


async def test_the_quota_is_per_plugin_over_all_its_properties(tmp_path):
    async with core(tmp_path, StorageConfig(quota_mb=1)) as c:
        big = b"x" * (400 * KIB)
        await c.call("storage.put", {"name": "one", "data": big})
        await c.call("storage.put", {"name": "two", "data": big}, prop="pb")
        with pytest.raises(StorageFull) as info:
            await c.call("storage.put", {"name": "three", "data": big})
        error = info.value
        assert (error.http_status, error.error_code) == (409, "storage_full")
        assert error.details == {
            "reason": "bytes",
            "used": 800 * KIB,
            "limit": 1024 * KIB,
            "needed": 400 * KIB,
            "name": "three",
        }
        assert "quota of 1048576 bytes" in error.message
        assert await c.call("storage.get", {"name": "three"}) is None  # nothing written
        assert on_disk(tmp_path) == [MARKER, "pa/one", "pb/two"]  # and no temporary file
        # replacing a file counts only what it grows; another plugin has its own quota
        await c.call("storage.put", {"name": "one", "data": big + b"y" * (200 * KIB)})
        await c.call("storage.put", {"name": "three", "data": big}, plugin="other")
        with pytest.raises(StorageFull):
            await c.call("storage.put", {"name": "one", "data": big * 2})
        assert await c.call("storage.delete", {"name": "two"}, prop="pb") is True
        await c.call("storage.put", {"name": "three", "data": big})
        assert [e["size"] for e in await c.call("storage.list")] == [600 * KIB, 400 * KIB]


async def test_a_property_holds_at_most_max_files(tmp_path):
    async with core(tmp_path, max_files=3) as c:
        for name in ("a", "b", "c"):
            await c.call("storage.put", {"name": name, "data": b"1"})
        with pytest.raises(StorageFull) as info:
            await c.call("storage.put", {"name": "d", "data": b""})
        assert info.value.details["reason"] == "files" and info.value.details["limit"] == 3
        await c.call("storage.put", {"name": "a", "data": b"22"})  # a file it has: replaced
        await c.call("storage.put", {"name": "d", "data": b""}, prop="pb")  # per property
        await c.call("storage.delete", {"name": "b"})
        await c.call("storage.put", {"name": "d", "data": b""})


async def test_the_count_survives_a_restart_and_starts_afresh_after_an_uninstall(tmp_path):
    async with core(tmp_path, StorageConfig(quota_mb=1)) as c:
        await c.call("storage.put", {"name": "one", "data": b"x" * (700 * KIB)})
        # a put that crashed half way left a temporary file behind
        (tmp_path / "storage" / PLUGIN / "pa" / ".tmp-crashed").write_bytes(b"x" * KIB)
    async with core(tmp_path, StorageConfig(quota_mb=1)) as c:  # a new server: counts again
        with pytest.raises(StorageFull) as info:
            await c.call("storage.put", {"name": "two", "data": b"x" * (400 * KIB)})
        assert info.value.details["used"] == 700 * KIB
        assert on_disk(tmp_path) == [MARKER, "pa/one"]  # the leftover is gone
        # what an uninstall does (packages/service.py): the plugin's directory goes
        await records.delete_plugin(c.db, PLUGIN)
        storage_dir = tmp_path / "storage" / PLUGIN
        for path in sorted(storage_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        storage_dir.rmdir()
        await c.call("storage.put", {"name": "two", "data": b"x" * (400 * KIB)})
        assert await c.call("storage.get", {"name": "one"}) is None


async def test_a_failed_write_leaves_the_old_file_and_nothing_half_written(tmp_path, monkeypatch):
    async with core(tmp_path) as c:
        await c.call("storage.put", {"name": "kept", "data": b"old"})

        def disk_full(src, dst):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(storage.os, "replace", disk_full)
        with pytest.raises(StorageFull) as info:
            await c.call("storage.put", {"name": "kept", "data": b"new, longer"})
        assert info.value.details == {"reason": "disk_full"}
        monkeypatch.undo()
        assert await c.call("storage.get", {"name": "kept"}) == b"old"
        assert on_disk(tmp_path) == [MARKER, "pa/kept"]
        # the count did not move: the same put goes through now
        await c.call("storage.put", {"name": "kept", "data": b"new, longer"})
        assert c.lane._usage[PLUGIN].bytes == len(b"new, longer")


async def test_files_are_private_to_the_server(tmp_path):
    async with core(tmp_path) as c:
        await c.call("storage.put", {"name": "a", "data": b"x"})
        prop_dir = tmp_path / "storage" / PLUGIN / "pa"
        assert os.stat(prop_dir).st_mode & 0o077 == 0
        assert os.stat(prop_dir / "a").st_mode & 0o077 == 0


# --- the store's byte quota ----------------------------------------------------------------------


async def test_the_store_refuses_a_value_past_the_plugins_byte_quota(tmp_path):
    async with core(tmp_path, StorageConfig(store_mb=1)) as c:
        value = b"v" * (60 * KIB)  # about what the issue's 1,500 x 60 KB store held
        for i in range(17):  # 17 x 60 KiB (and their msgpack headers): just under 1 MiB
            await c.call(
                "store.set", {"key": f"k{i}", "value": value}, prop="pa" if i % 2 else "pb"
            )
        used = records.plugin_state_bytes(c.db, PLUGIN)
        assert 17 * 60 * KIB < used <= 1024 * KIB
        with pytest.raises(StoreFull) as info:
            await c.call("store.set", {"key": "k17", "value": value})
        error = info.value
        assert (error.http_status, error.error_code) == (409, "store_full")
        assert error.details == {"reason": "bytes", "used": used, "limit": 1024 * KIB, "key": "k17"}
        assert await c.call("store.get", {"key": "k17"}) == {"found": False, "value": None}
        # a value that does not grow always goes; another plugin has its own quota
        await c.call("store.set", {"key": "k1", "value": b"small"})
        await c.call("store.set", {"key": "k17", "value": value}, plugin="other")
        await c.call("store.delete", {"key": "k3"})
        await c.call("store.set", {"key": "k17", "value": value})
        assert records.plugin_state_bytes(c.db, PLUGIN) <= 1024 * KIB


async def test_the_store_byte_quota_counts_each_plugins_rows_only(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        await records.state_set(db, "a", "p", "k", b"x" * 100)
        await records.state_set(db, "ab", "p", "k", b"x" * 1000)
        refused = await records.state_set(db, "a", "q", "k2", b"x" * 100, max_bytes=250)
        assert refused is None
        refused = await records.state_set(db, "a", "q", "k3", b"x" * 100, max_bytes=250)
        assert refused == records.StateRefused("bytes", records.plugin_state_bytes(db, "a"))
        assert records.state_get(db, "a", "q", "k3") == (False, None)
