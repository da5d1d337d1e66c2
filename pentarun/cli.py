"""Command line: `pentarun serve`, `pentarun plugin new|validate|pack|sign|test`, `keys generate`.

Exit codes: 0 success, 1 the checked plugin has problems (validate, test, pack, sign) or failed
its gates (test), 2 bad usage or an error that stopped the command.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

import trio

from .config import Config, load_config
from .datadir import DataDirLocked
from .errors import PentarunError
from .gateway.app import Services
from .packages import authoring, devloop
from .registry import read_source_definition
from .runtime import DEMO_PROPERTY, Options, run_server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pentarun", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the plugin runtime")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument("--data-dir", help="where the database, tokens and run.json live")
    serve.add_argument("--admin-bind", help="HOST:PORT of the admin API (port 0 allowed)")
    serve.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING...")
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

    plugin = commands.add_parser("plugin", help="write, check, pack, sign and test plugins")
    sub = plugin.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="create a plugin that passes validate and test")
    new.add_argument("name")
    new.add_argument("--dir", type=Path, default=Path("."), help="parent directory")
    for name, text in (
        ("validate", "check a source directory or zip"),
        ("test", "run the server's test gates on a directory or zip"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("path", type=Path, metavar="DIR|ZIP")
        cmd.add_argument("--config", type=Path, help="TOML configuration (thresholds, signatures)")
        cmd.add_argument("--trust", type=Path, help="directory of trusted <key_id>.pub keys")
    dev = sub.add_parser("dev", help="live reload: build, upload and swap in on every change")
    dev.add_argument("path", type=Path, metavar="DIR")
    dev.add_argument("--server", default="http://127.0.0.1:8128", help="the admin URL")
    dev.add_argument("--token", default=os.environ.get("PENTARUN_TOKEN", ""))
    dev.add_argument("--token-file", type=Path, help="default: <data_dir>/admin.token")
    dev.add_argument("--config", type=Path, help="TOML configuration (data dir, limits)")
    dev.add_argument("--approve", action="store_true", help="approve builds that need it")
    dev.add_argument("--once", action="store_true", help="build once; exit 0 when it went live")
    dev.add_argument("--interval", type=float, default=0.3, help="seconds between looks")
    packer = sub.add_parser("pack", help="zip a source directory with a fresh plugin.id")
    packer.add_argument("path", type=Path, metavar="DIR")
    packer.add_argument("--out", type=Path, default=Path("."), help="output directory")
    packer.add_argument("--publisher", default="", help="publisher recorded in plugin.id")
    signer = sub.add_parser("sign", help="sign a package's plugin.id with an Ed25519 key")
    signer.add_argument("path", type=Path, metavar="ZIP")
    signer.add_argument("--key", type=Path, required=True, help="private key (PEM)")
    signer.add_argument(
        "--key-id", help="key id recorded in the signature (default: key file name)"
    )
    signer.add_argument("--out", type=Path, help="write here instead of replacing ZIP")

    keys = commands.add_parser("keys", help="signing keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    generate = keys_sub.add_parser("generate", help="create an Ed25519 key pair")
    generate.add_argument(
        "--out", type=Path, default=Path("keys"), help="output directory (default: ./keys)"
    )
    generate.add_argument("--key-id", default="", help="default: key-<random>")
    return parser


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_welcome(services: Services, demo: bool) -> None:
    token_file = services.data_dir / "admin.token"
    lines = [
        f"pentarun is serving the admin API on {services.admin_url}",
        f"  operator token: {token_file}",
        f"  run file:       {services.data_dir / 'run.json'}",
    ]
    ha_url = services.listeners.get("homeassistant")
    if demo and not ha_url:
        lines += [
            "The Home Assistant port could not be opened (is it taken?); see",
            f"  {services.admin_url}/api/plugins/homeassistant/events and choose another with",
            "  PENTARUN_LISTENERS__HOMEASSISTANT=0.0.0.0:<port> or [listeners] in the config.",
        ]
    if demo and ha_url and services.demo_key:
        lines += [
            f"Home Assistant API for property {DEMO_PROPERTY[0]!r} on {ha_url}",
            f"  key (shown once): {services.demo_key}",
            "  try it:",
            f"    curl -s {ha_url}/api/ha/v1/cameras "
            f'-H "Authorization: Bearer {services.demo_key}"',
            f"    curl -s -o frame.jpg -u any:{services.demo_key} "
            f"{ha_url}/api/ha/v1/cameras/front-door/snapshot.jpg",
        ]
    _say("\n".join(lines))


def serve(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, str]] = {}
    if args.data_dir:
        overrides.setdefault("server", {})["data_dir"] = args.data_dir
    if args.admin_bind:
        overrides.setdefault("server", {})["admin_bind"] = args.admin_bind
    config = load_config(args.config, **overrides)
    options = Options(plugin_dirs=args.plugin_dir, demo=args.demo)
    for plugin_dir in args.plugin_dir:  # every problem of every tree, before anything starts
        read_source_definition(plugin_dir)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            services: Services = await nursery.start(run_server, config, options)
            _print_welcome(services, args.demo)

    locked: list[BaseException] = []
    try:
        trio.run(main)
    except* DataDirLocked as group:  # one clear line, nothing touched
        locked.extend(group.exceptions)
    if locked:
        _say(f"pentarun: {locked[0]}")
        return 1
    return 0


def plugin(args: argparse.Namespace) -> int:
    config: Config = load_config(getattr(args, "config", None))
    match args.action:
        case "new":
            root = authoring.scaffold(args.name, args.dir)
            _say(f"created {root}\nnext: pentarun plugin test {root}")
            return 0
        case "validate":
            ctx = authoring.context(config, args.trust)
            package, warnings = authoring.check_path(args.path, ctx)
            _say(f"{args.path}: OK ({package.key} {package.version})")
            if warnings:
                _say(f"{len(warnings)} warning(s):\n" + authoring.format_problems(warnings))
            return 0
        case "pack":
            ctx = authoring.context(config, None)
            out = authoring.pack_directory(args.path, args.out, args.publisher, ctx)
            _say(f"packed {out}")
            return 0
        case "sign":
            key_id = args.key_id or args.key.stem
            out = authoring.sign_zip(args.path, args.key, key_id, args.out or args.path)
            _say(f"signed {out} with key {key_id!r}")
            return 0
        case "dev":
            token_file = args.token_file or devloop.token_path(config)
            token = devloop.read_token(args.token, token_file)
            return devloop.dev(
                args.path,
                devloop.Server(args.server, token),
                config,
                authoring.context(config, None),
                _say,
                approve=args.approve,
                once=args.once,
                interval_s=max(0.05, args.interval),
            )
        case "test":
            ctx = authoring.context(config, args.trust)
            report = authoring.run_test(args.path, config, ctx, _say)
            print(authoring.format_report(report), flush=True)
            return 0 if report.ok else 1
    return 2


def keys(args: argparse.Namespace) -> int:
    key_id = args.key_id or f"key-{secrets.token_hex(4)}"
    private, public = authoring.generate_keys(args.out, key_id)
    _say(
        f"private key: {private} (keep it secret; mode 0600)\n"
        f"public key:  {public} (copy it into the server's trust store, or POST it to "
        "/api/trust/keys)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command != "serve":
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return {"serve": serve, "plugin": plugin, "keys": keys}[args.command](args)
    except authoring.ProblemsFound as exc:
        _say(str(exc))
        return 1
    except (PentarunError, authoring.AuthoringError, devloop.DevError) as exc:
        _say(f"pentarun: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
