"""Calls the bench plugin's echo through the core, timing each call from inside the worker."""

import time

from pentarun.sdk import Context, Plugin

plugin = Plugin()


@plugin.handler("relay.loop")
async def loop(ctx: Context, params: dict) -> dict:
    samples = []
    for _ in range(int(params["n"])):
        start = time.perf_counter()
        await ctx.plugins.call("bench", "echo", n=1)
        samples.append(time.perf_counter() - start)
    return {"samples": samples}


if __name__ == "__main__":
    plugin.run()
