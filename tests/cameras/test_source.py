"""Camera source bodies: the rules, and credentials kept apart from what is stored."""

import msgspec
import pytest

from pentarun.cameras.credentials import Sealer
from pentarun.cameras.source import (
    Credentials,
    Source,
    SourceBody,
    SourceProblem,
    placement_problem,
    redact,
    source_of,
    split_source,
)
from pentarun.cameras.sources.video import with_credentials


def body(**fields):
    return msgspec.convert(fields, SourceBody)


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ({}, Source("demo")),
        (
            {"kind": "http", "url": "http://cam.local/snap.jpg"},
            Source("http", url="http://cam.local/snap.jpg"),
        ),
        (
            {"kind": "mjpeg", "url": "https://10.0.0.5:8443/v.mjpg?x=1"},
            Source("mjpeg", url="https://10.0.0.5:8443/v.mjpg?x=1"),
        ),
        (
            {"kind": "rtsp", "url": "rtsp://cam:554/stream1"},
            Source("rtsp", url="rtsp://cam:554/stream1"),
        ),
        ({"kind": "file", "path": "/srv/video.mp4"}, Source("file", path="/srv/video.mp4")),
    ],
)
def test_valid_sources(fields, stored):
    assert split_source(body(**fields)) == (stored, None)


def test_credentials_are_split_off():
    creds = {"username": "admin", "password": "s3cret:@/"}
    source, kept = split_source(body(kind="rtsp", url="rtsp://cam/s", credentials=creds))
    assert "s3cret" not in msgspec.json.encode(source).decode()
    assert kept == Credentials("admin", "s3cret:@/")
    assert "s3cret" not in repr(kept)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "http"}, "url"),
        ({"kind": "http", "url": "ftp://cam/x.jpg"}, "url"),
        ({"kind": "mjpeg", "url": "rtsp://cam/x"}, "url"),
        ({"kind": "rtsp", "url": "http://cam/x"}, "url"),
        ({"kind": "http", "url": "http:///x.jpg"}, "url"),
        ({"kind": "http", "url": "http://admin:pw@cam/x.jpg"}, "url"),
        ({"kind": "http", "url": "http://cam/x y.jpg"}, "url"),
        ({"kind": "http", "url": "http://cam:99999/x.jpg"}, "url"),
        ({"kind": "http", "url": "http://cam/\nx"}, "url"),
        ({"kind": "http", "url": "http://cam/x", "path": "/x"}, "path"),
        ({"kind": "file"}, "path"),
        ({"kind": "file", "path": "relative.mp4"}, "path"),
        ({"kind": "file", "url": "http://cam/x"}, "url"),
        ({"kind": "file", "path": "/x.mp4", "credentials": {"username": "u"}}, "credentials"),
        ({"kind": "demo", "url": "http://cam/x"}, "kind"),
        ({"kind": "http", "url": "http://c/x", "credentials": {"username": "a:b"}}, "credentials"),
        (
            {
                "kind": "http",
                "url": "http://c/x",
                "credentials": {"username": "a", "password": "\x00"},
            },
            "credentials",
        ),
    ],
)
def test_invalid_sources_name_the_field(fields, field):
    with pytest.raises(SourceProblem) as info:
        split_source(body(**fields))
    assert info.value.field == field
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "onvif"},
        {"kind": "http", "url": "http://c/" + "x" * 3000},
        {"kind": "http", "url": "http://c/x", "credentials": {"username": ""}},
        {"kind": "http", "url": "http://c/x", "credentials": {"username": "u", "extra": 1}},
        {"kind": "http", "url": "http://c/x", "token": "t"},
    ],
)
def test_the_body_shape_is_checked_by_its_struct(fields):
    with pytest.raises(msgspec.ValidationError):
        body(**fields)


def test_redact_keeps_scheme_host_and_port_only():
    assert redact("rtsp://cam.local:554/live?token=abc") == "rtsp://cam.local:554/…"
    assert redact("http://u:p@cam/x") == "http://cam/…"


def test_source_of_reads_unknown_kinds_as_demo():
    assert source_of({"kind": "mystery", "url": "x"}) == Source("demo")
    assert source_of({"kind": "http", "url": "http://c/x", "credentials": "x"}) == Source(
        "http", url="http://c/x"
    )


def test_ffmpeg_url_gets_percent_encoded_credentials():
    url = with_credentials("rtsp://cam:554/s", Credentials("ad min", "p@ss:/"))
    assert url == "rtsp://ad%20min:p%40ss%3A%2F@cam:554/s"
    assert with_credentials("rtsp://cam/s", None) == "rtsp://cam/s"


def test_sealed_credentials_open_only_with_their_key():
    creds = Credentials("admin", "hunter2")
    sealed = Sealer(b"k" * 32).seal(creds)
    assert "hunter2" not in sealed and "admin" not in sealed
    assert Sealer(b"k" * 32).unseal(sealed) == creds
    assert Sealer(b"o" * 32).unseal(sealed) is None


def test_where_a_source_may_point():
    files = "/var/pentarun/camera-files"
    clip = Source("file", path=f"{files}/door.mp4")
    assert placement_problem(clip, trusted=True, files_dir=files, real_path=clip.path) is None
    outside = placement_problem(clip, trusted=True, files_dir=files, real_path="/etc/shadow")
    assert outside is not None and outside.field == "path"  # a link out of the dir counts too
    sibling = placement_problem(
        clip, trusted=True, files_dir=files, real_path=files + "-other/x.mp4"
    )
    assert sibling is not None
    manager = placement_problem(clip, trusted=False, files_dir=files, real_path=clip.path)
    assert manager is not None and manager.field == "kind"
    for url in (
        "http://127.0.0.1:8128/api",
        "http://localhost/x",
        "rtsp://169.254.169.254/",
        "http://[::1]/x",
        "http://0.0.0.0/",
    ):
        found = placement_problem(Source("http", url=url), trusted=False, files_dir=files)
        assert found is not None and found.field == "url", url
        assert placement_problem(Source("http", url=url), trusted=True, files_dir=files) is None
    lan = Source("mjpeg", url="http://192.168.1.20:8080/video")
    assert placement_problem(lan, trusted=False, files_dir=files) is None
