"""A listener kept bound through a hand over serves the routes of the worker serving now: the
route table follows the serving actor's manifest (a new version's new route answers at once,
a route it dropped is a 404), and the manifest it was opened with stands in without one."""

import msgspec

from pentarun.packages.manifest import Route

from .test_listeners_app import API, MANIFEST, request, site  # noqa: F401  (site: a fixture)

EXTRA = Route("POST", f"{API}/cameras/{{id}}/ptz", "ha.cameras.ptz", "homeassistant")


async def test_the_route_table_follows_the_serving_actors_manifest(site):  # noqa: F811
    app, key = site.app(), site.keys["ha"]
    assert (await request(app, "POST", f"{API}/cameras/front/ptz", key=key)).status == 404
    # the new version's worker takes over, declaring one route more and dropping another
    kept = [r for r in MANIFEST.routes if r.path != f"{API}/info"]
    site.plugin.manifest = msgspec.structs.replace(MANIFEST, routes=[*kept, EXTRA])
    answer = await request(app, "POST", f"{API}/cameras/front/ptz", key=key)
    assert answer.status == 200
    handler, _, forwarded, idempotent = site.plugin.calls[-1]
    assert (handler, forwarded.path_params, idempotent) == (
        "ha.cameras.ptz",
        {"id": "front"},
        False,
    )
    assert (await request(app, "GET", f"{API}/info", key=key)).status == 404
    assert (await request(app, "GET", f"{API}/cameras", key=key)).status == 200
