import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import MethodNotAllowed, NotFound
from pentarun.gateway.listener_routes import compile_routes, match
from pentarun.packages.manifest import Listener, Manifest, Route, Security

ROUTES = [
    ("GET", "/api/ha/v1/cameras", "list"),
    ("GET", "/api/ha/v1/cameras/{id}", "get"),
    ("GET", "/api/ha/v1/cameras/{id}/snapshot.jpg", "snap"),
    ("POST", "/api/ha/v1/cameras/{id}/stream-token", "token"),
]
MANIFEST = Manifest(
    key="ha",
    name="HA",
    version="1.0.0",
    engine=">=0",
    traits=["x"],
    security=Security(True, ["internal"]),
    listener=Listener("ha", 8129),
    routes=[Route(m, p, h, "ha") for m, p, h in ROUTES],
)
COMPILED = compile_routes(MANIFEST)


def test_matching_extracts_parameters_and_tells_404_from_405():
    assert match(COMPILED, "GET", "/api/ha/v1/cameras") == (MANIFEST.routes[0], {})
    route, params = match(COMPILED, "GET", "/api/ha/v1/cameras/front-door/snapshot.jpg")
    assert route.handler == "snap" and params == {"id": "front-door"}
    with pytest.raises(MethodNotAllowed):
        match(COMPILED, "DELETE", "/api/ha/v1/cameras/x")
    for path in (
        "/api/ha/v1/cameras/",
        "/api/ha/v1/cameras/a/b",
        "/api/ha/v1/camerasX",
        "/api/ha/v1/cameras/x/snapshotXjpg",
    ):
        with pytest.raises(NotFound):
            match(COMPILED, "GET", path)


segment = st.text(st.characters(blacklist_characters="/", blacklist_categories=["Cs"]), min_size=1)


@given(segment)
def test_any_segment_is_one_parameter_never_more(value):
    route, params = match(COMPILED, "GET", f"/api/ha/v1/cameras/{value}/snapshot.jpg")
    assert route.handler == "snap" and params == {"id": value}


@given(st.text(max_size=80), st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_arbitrary_paths_only_match_or_refuse(path, method):
    try:
        route, params = match(COMPILED, method, path)
    except (NotFound, MethodNotAllowed):
        return
    assert route.method == method and all("/" not in v for v in params.values())
