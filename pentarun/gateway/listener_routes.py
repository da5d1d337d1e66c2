"""Route tables of plugin listeners. Pure: a manifest's routes in, (route, path params) out.

    compile_routes(manifest) -> [CompiledRoute]
    match(routes, method, path) -> (Route, {param: value})   NotFound / MethodNotAllowed

A `{name}` in a declared path matches exactly one non-empty path segment (never a `/`); the
rest of the path matches literally. A path that some route matches with another method is a
405, any other a 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import MethodNotAllowed, NotFound
from ..packages.manifest import Manifest, Route

SHOWN = 200  # characters of a path an error message repeats
PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class CompiledRoute:
    route: Route
    pattern: re.Pattern[str]


def compile_routes(manifest: Manifest) -> list[CompiledRoute]:
    compiled = []
    for route in manifest.routes:
        regex = "".join(
            f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
            for i, part in enumerate(PARAM.split(route.path))
        )
        compiled.append(CompiledRoute(route, re.compile(regex)))
    return compiled


def match(routes: list[CompiledRoute], method: str, path: str) -> tuple[Route, dict[str, str]]:
    allowed = False
    for compiled in routes:
        found = compiled.pattern.fullmatch(path)  # the whole path: "/x\n" is not "/x"
        if found is None:
            continue
        allowed = True
        if compiled.route.method == method:
            return compiled.route, found.groupdict()
    if allowed:
        raise MethodNotAllowed(f"{method[:16]} is not allowed on {path[:SHOWN]}")
    raise NotFound(f"no route {path[:SHOWN]}")
