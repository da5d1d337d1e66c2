"""A package's own setup wizard (`ui/wizard.html`, manifest `ui.wizard`), served sandboxed.

    GET /plugins/<key>/wizard      the wizard's HTML, as the package holds it

The wizard is the plugin author's HTML and script, so it runs with nothing of the console:
its response carries its own CSP, `sandbox allow-scripts` (an opaque origin: no cookies, no
storage, no same-origin requests, no top navigation, no popups, no forms), no network at all
(`default-src 'none'`, `connect-src 'none'`; inline script and style are what a one-file
wizard needs), and it may be framed by the console only (`frame-ancestors 'self'`). The
console frames it in `<iframe sandbox="allow-scripts">`; all it can do is post
`{"type": "pentarun.config", "values": {...}}` to its parent, which console.js sends to the
config route (checked against `config_schema`, like the form) only when the message comes
from that frame.

The file is read from the plugin's installed tree, or before installation (waiting for
approval, say) from its uploaded package, or from its source directory; never more than
MAX_WIZARD_BYTES, off the trio thread.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import trio
from quart import Blueprint, Response

from ...errors import NotFound
from ...packages.package import WIZARD
from ...security.operators import READ
from ...store import records
from ..app import current_services
from ..params import plugin_key
from .auth import Viewer, page

bp = Blueprint("console_wizard", __name__)

MAX_WIZARD_BYTES = 1024 * 1024
WIZARD_CSP = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; font-src data:; connect-src 'none'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
)


def read_wizard(candidates: list[Path], package: Path | None) -> bytes | None:
    """The wizard from the first tree that has it, else from the package zip (blocking)."""
    for path in candidates:
        try:
            if path.is_file() and path.stat().st_size <= MAX_WIZARD_BYTES:
                return path.read_bytes()
        except OSError:
            continue
    if package is None or not package.is_file():
        return None
    try:
        with zipfile.ZipFile(package) as archive:
            info = archive.getinfo(WIZARD)
            if info.file_size > MAX_WIZARD_BYTES:
                return None
            with archive.open(info) as handle:
                return handle.read(MAX_WIZARD_BYTES + 1)[:MAX_WIZARD_BYTES]
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


@bp.get("/plugins/<key>/wizard")
@page(READ)
async def wizard(view: Viewer, key: str) -> Response:
    key = plugin_key(key)
    services = current_services()
    row = services.registry.plugin(key)
    if row.manifest is None or not row.manifest.ui.get("wizard"):
        raise NotFound(f"{key!r} has no setup wizard")
    layout = services.installs.layout
    installs = records.installs_of(services.db, key)
    candidates: list[Path] = []
    package: Path | None = None
    if installs:
        latest = installs[-1]
        shown = next((r for r in installs if r.active), latest)
        candidates = [layout.tree(key, latest.id) / WIZARD, layout.tree(key, shown.id) / WIZARD]
        package = layout.package(latest.id)
    elif row.source_dir:
        candidates = [Path(row.source_dir) / WIZARD]
    html = await trio.to_thread.run_sync(read_wizard, candidates, package)
    if html is None:
        raise NotFound(f"the setup wizard of {key!r} cannot be read")
    return Response(
        html,
        content_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": WIZARD_CSP,
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        },
    )
