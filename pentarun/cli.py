"""Command line: `pentarun serve` (plugin authoring commands arrive with the install pipeline)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from .config import load_config
from .errors import PentarunError
from .runtime import DEMO_PROPERTY, Options, Services, run_server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pentarun", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the plugin runtime")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument("--data-dir", help="where the database, tokens and run.json live")
    serve.add_argument("--admin-bind", help="HOST:PORT of the admin API (port 0 allowed)")
    serve.add_argument(
        "--demo", action="store_true", help="seed a demo property and enable bundled plugins"
    )
    serve.add_argument(
        "--plugin-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="run a plugin straight from its source directory (repeatable)",
    )
    serve.add_argument("--log-level", default="INFO")
    return parser


def _print_welcome(services: Services, demo: bool) -> None:
    token_file = services.data_dir / "admin.token"
    lines = [
        f"pentarun is serving the admin API on {services.admin_url}",
        f"  operator token: {token_file}",
        f"  run file:       {services.data_dir / 'run.json'}",
    ]
    if demo:
        pid = DEMO_PROPERTY[0]
        for key in sorted(services.supervisor.actors):
            lines += [
                f"  try the demo plugin {key!r}:",
                f"    curl -s -X POST {services.admin_url}/api/plugins/{key}/call \\",
                f'      -H "Authorization: Bearer $(cat {token_file})" \\',
                f"""      -d '{{"handler": "hello", "property": "{pid}", """
                """"params": {"name": "you"}}'""",
            ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def serve(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, str]] = {}
    if args.data_dir:
        overrides.setdefault("server", {})["data_dir"] = args.data_dir
    if args.admin_bind:
        overrides.setdefault("server", {})["admin_bind"] = args.admin_bind
    config = load_config(args.config, **overrides)
    options = Options(plugin_dirs=args.plugin_dir, demo=args.demo)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            services: Services = await nursery.start(run_server, config, options)
            _print_welcome(services, args.demo)

    trio.run(main)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return serve(args)
    except PentarunError as exc:
        print(f"pentarun: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
