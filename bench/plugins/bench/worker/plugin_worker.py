"""Minimal echo worker for the IPC benchmark."""

from pentarun.sdk import Context, Plugin

plugin = Plugin()


@plugin.handler("echo")
async def echo(ctx: Context, params: dict) -> dict:
    return params


if __name__ == "__main__":
    plugin.run()
