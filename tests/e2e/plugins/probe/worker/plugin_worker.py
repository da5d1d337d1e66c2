"""A plugin that misbehaves on request, for the supervision tests.

PROBE_MODE: "" (normal), "crash_on_start", "hang_health", "no_handshake", "slow_start",
"old_protocol", "storm_on_start", "note_sigterm" (a SIGTERM writes $HOME/terminated, then exits).
"""

import logging
import os
import sys

import trio

from pentarun.sdk import Context, CoreClient, Error, Plugin, Response
from pentarun.sdk.plugin import CoreCallError

MODE = os.environ.get("PROBE_MODE", "")
log = logging.getLogger("probe")

if MODE == "crash_on_start":
    sys.exit(3)
if MODE == "no_handshake":
    import time

    time.sleep(3600)
if MODE == "slow_start":  # the process exists well before its handshake
    import time

    time.sleep(1.0)
if MODE == "note_sigterm":
    import signal

    def _noted(signum: int, frame: object) -> None:
        with open(os.path.join(os.environ["HOME"], "terminated"), "w") as handle:
            handle.write(signal.Signals(signum).name)
        os._exit(0)

    signal.signal(signal.SIGTERM, _noted)
if MODE == "old_protocol":
    import pentarun.sdk.plugin as sdk_plugin

    sdk_plugin.PROTOCOL_VERSION = 99  # type: ignore[misc]

plugin = Plugin()


@plugin.handler("echo")
async def echo(ctx: Context, params: dict) -> dict:
    return {"property": ctx.property, "params": params}


@plugin.handler("print")
async def noisy(ctx: Context, params: dict) -> dict:
    print("debug: hello from print()", flush=True)
    sys.stdout.write("more stdout noise\n")
    return {"printed": True}


@plugin.handler("store.roundtrip")
async def store_roundtrip(ctx: Context, params: dict) -> dict:
    if "set" in params:
        await ctx.store.set("value", params["set"])
    return {"value": await ctx.store.get("value"), "keys": await ctx.store.keys()}


@plugin.handler("read_other_property")
async def read_other(ctx: Context, params: dict) -> dict:
    other = CoreClient(ctx.core._send, params["property"])
    return {"value": await other.call("store.get", key="value")}


@plugin.handler("fail")
async def fail(ctx: Context, params: dict) -> dict:
    raise Error("not_found", "no such thing", 404)


@plugin.handler("raise")
async def raise_uncaught(ctx: Context, params: dict) -> dict:
    """A bug an outside caller can trigger: an ERROR record, then an uncaught exception."""
    log.error("cannot handle %r", params.get("input"))
    raise ValueError(f"bad input {params.get('input')!r}")


@plugin.handler("raw")
async def raw(ctx: Context, params: dict) -> Response:
    return Response(201, b"\x89PNG", {"X-Probe": "1"}, "image/png")


@plugin.handler("storm")
async def storm(ctx: Context, params: dict) -> dict:
    for i in range(int(params.get("count", 20))):
        log.error("storm record %d", i)
    return {"logged": True}


@plugin.on_start
async def storm_on_start(ctx: Context) -> None:
    """PROBE_MODE=storm_on_start: ERROR records outside any call (they feed the storm rule)."""
    if MODE == "storm_on_start":
        for i in range(12):
            log.error("storm record %d", i)


@plugin.handler("chatter")
async def chatter(ctx: Context, params: dict) -> dict:
    for i in range(int(params.get("count", 100))):
        log.info("chatter %d", i)
    return {"logged": True}


@plugin.handler("garbage")
async def garbage(ctx: Context, params: dict) -> dict:
    os.write(int(os.environ["PENTARUN_IPC_FD"]), b"\xff\xff\xff\xffnot a frame at all")
    return {}


@plugin.hook("snapshot.annotate")
async def annotate(ctx: Context, payload: dict) -> dict | None:
    if MODE == "hook_fail":
        raise RuntimeError("annotator broke")
    if not MODE.startswith("hook_"):
        return None
    text = MODE.encode()  # a JPEG comment segment right after the start-of-image marker
    jpeg = payload["jpeg"]
    return {"jpeg": jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]}


@plugin.handler("snapshot")
async def snapshot(ctx: Context, params: dict) -> Response:
    return Response(
        200, await ctx.core.call("cameras.snapshot", camera=params["camera"]), {}, "image/jpeg"
    )


HOARD = []


@plugin.handler("hog")
async def hog(ctx: Context, params: dict) -> dict:
    HOARD.append(bytearray(int(params.get("mb", 200)) * 2**20))  # touched: resident
    return {"held_mb": sum(len(b) for b in HOARD) // 2**20}


@plugin.handler("ask")
async def ask(ctx: Context, params: dict) -> dict:
    """Call another plugin through the core (`ctx.plugins.call`); its answer or error."""
    try:
        value = await ctx.plugins.call(
            params["plugin"], params["handler"], **params.get("params", {})
        )
    except Error as exc:
        return {"error": exc.code, "status": exc.status, "message": exc.message}
    return {"value": value}


@plugin.handler("sleep")
async def sleep(ctx: Context, params: dict) -> dict:
    await trio.sleep(float(params.get("seconds", 1)))
    return {"slept": True}


@plugin.handler("exit")
async def exit_now(ctx: Context, params: dict) -> dict:
    os._exit(int(params.get("code", 1)))


@plugin.on_event("camera.motion")
@plugin.on_event("camera.tamper")
async def remember_event(ctx: Context, event: dict) -> None:
    if event["data"].get("hang"):
        await trio.sleep_forever()
    seen = await ctx.store.get("events", [])
    await ctx.store.set("events", [*seen, [event["type"], event["property"], event["data"]]])


@plugin.handler("events.seen")
async def events_seen(ctx: Context, params: dict) -> dict:
    return {"events": await ctx.store.get("events", [])}


@plugin.handler("core.burst")
async def core_burst(ctx: Context, params: dict) -> dict:
    """`count` core calls at once; returns the error codes of those the core refused."""
    codes: list[str] = []

    async def one() -> None:
        try:
            await ctx.store.get("value")
        except Error as exc:
            codes.append(exc.code)

    async with trio.open_nursery() as nursery:
        for _ in range(int(params.get("count", 10))):
            nursery.start_soon(one)
    return {"refused": codes}


KEPT: list = []


@plugin.handler("deafen")
async def deafen(ctx: Context, params: dict) -> dict:
    """Stop reading the channel but keep the process (and the channel's write side) alive."""
    fd = int(os.environ["PENTARUN_IPC_FD"])
    import socket  # noqa: PLC0415

    kept = socket.socket(fileno=os.dup(fd))  # held open: the core sees no end of stream
    kept.shutdown(socket.SHUT_RD)
    KEPT.append(kept)
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    threading.Thread(target=time.sleep, args=(30,)).start()  # outlives the SDK's loop
    return {"deaf": True}


@plugin.handler("log.big")
async def log_big(ctx: Context, params: dict) -> dict:
    logging.getLogger("x" * 10_000).warning("y" * int(params.get("size", 100_000)))
    return {}


@plugin.handler("fetch")
async def fetch(ctx: Context, params: dict) -> dict:
    """Plain urllib, as any plugin would write it: the proxy variables do the rest."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    # "direct": bypass the proxy variables, as code that opens its own sockets would
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    open_url = opener.open if params.get("direct") else urllib.request.urlopen

    def get() -> dict:
        try:
            with open_url(params["url"], timeout=10) as response:
                return {"status": response.status, "length": len(response.read())}
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "length": 0, "body": exc.read().decode(errors="replace")}
        except OSError as exc:  # no proxy, or a tunnel the proxy refused
            return {"status": 0, "length": 0, "error": f"{type(exc).__name__}: {exc}"}

    return {**await trio.to_thread.run_sync(get), "proxy": os.environ.get("http_proxy", "")}


@plugin.handler("tamper")
async def tamper(ctx: Context, params: dict) -> dict:
    return {
        "delivered": await ctx.events.publish(params.get("type", "camera.tamper"), {"by": "probe"})
    }


@plugin.handler("storage")
async def storage(ctx: Context, params: dict) -> dict:
    """`ctx.storage`: op put (name, size: that many bytes of `fill`), get, list or delete."""
    op, name = params["op"], params.get("name", "")
    try:
        if op == "put":
            data = params.get("fill", "x").encode() * int(params.get("size", 1))
            await ctx.storage.put(name, data)
            return {"put": len(data)}
        if op == "get":
            data = await ctx.storage.get(name)
            return {"data": None if data is None else data.decode()}
        if op == "list":
            return {"names": await ctx.storage.list()}
        return {"deleted": await ctx.storage.delete(name)}
    except CoreCallError as exc:
        return {"error": exc.code, "status": exc.status, "details": exc.details}


@plugin.handler("core")
async def core_call(ctx: Context, params: dict) -> dict:
    """Any core call for this property: `name`, `params`; its answer or its error."""
    try:
        return {"value": await ctx.core.call(params["name"], **params.get("params", {}))}
    except Error as exc:
        return {"error": exc.code, "status": exc.status, "message": exc.message}


@plugin.on_event("recording.created")
async def remember_recording(ctx: Context, event: dict) -> None:
    seen = await ctx.store.get("recordings", [])
    await ctx.store.set("recordings", [*seen, event["data"]])


@plugin.handler("recordings.seen")
async def recordings_seen(ctx: Context, params: dict) -> dict:
    return {"recordings": await ctx.store.get("recordings", [])}


CONFIG_CHANGES = []


@plugin.on_config
async def config_changed(ctx: Context) -> None:
    CONFIG_CHANGES.append(dict(ctx.config))


@plugin.handler("config")
async def current_config(ctx: Context, params: dict) -> dict:
    return {"config": ctx.config, "changes": CONFIG_CHANGES}


@plugin.health
async def health(ctx: Context) -> dict:
    if MODE == "hang_health":
        await trio.sleep_forever()
    return {"ok": True, "mode": MODE}


if __name__ == "__main__":
    plugin.run()
