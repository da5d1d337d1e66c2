"""The hello plugin: a handler, per-property state, logging and a health check."""

import logging

from pentarun.sdk import Context, Error, Plugin

plugin = Plugin()
log = logging.getLogger("hello")


@plugin.handler("hello")
async def hello(ctx: Context, params: dict) -> dict:
    name = params.get("name", "world")
    if not isinstance(name, str) or len(name) > 100:
        raise Error("bad_name", "name must be a string of at most 100 characters", 400)
    count = await ctx.store.get("greetings", 0) + 1
    await ctx.store.set("greetings", count)
    prop = await ctx.core.call("properties.get")
    log.info("greeted %s on %s", name, ctx.property)
    return {"greeting": f"Hello, {name}!", "property": prop, "greetings": count}


@plugin.handler("count")
async def count(ctx: Context, params: dict) -> dict:
    return {"greetings": await ctx.store.get("greetings", 0)}


@plugin.health
async def health(ctx: Context) -> dict:
    return {"ok": True}


if __name__ == "__main__":
    plugin.run()
