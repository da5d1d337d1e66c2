"""Camera watch: the console's end-to-end plugin (tests/e2e/test_console.py)."""

import logging

from pentarun.sdk import Context, Plugin

plugin = Plugin()
log = logging.getLogger("camwatch")


@plugin.handler("watch.echo")
async def echo(ctx: Context, params: dict) -> dict:
    return {"property": ctx.property, "params": params}


@plugin.handler("watch.log")
async def say(ctx: Context, params: dict) -> dict:
    marker = str(params.get("marker", ""))
    log.warning("camwatch marker %s", marker)
    return {"logged": marker}


if __name__ == "__main__":
    plugin.run()
