"""The clip format and the clip directory: frames round-trip, a cut-short clip is recovered."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.recordings.clips import (
    CLIP_ID,
    ClipDir,
    ClipMeta,
    ClipWriter,
    new_clip_id,
    part,
    read_parts,
    read_range,
)

frames = st.lists(
    st.tuples(st.binary(max_size=300), st.floats(min_value=0, max_value=4e9)), max_size=8
)


@given(frames, st.integers(min_value=0, max_value=400))
def test_parts_round_trip_and_a_cut_stops_at_the_last_whole_frame(items, cut):
    data = b"".join(part(jpeg, at) for jpeg, at in items)
    parts = list(read_parts(data))
    assert [p.jpeg for p in parts] == [jpeg for jpeg, _ in items]
    assert all(abs(p.at - round(at, 3)) < 1e-3 for p, (_, at) in zip(parts, items, strict=True))
    assert not parts or parts[-1].end == len(data)
    short = data[: max(0, len(data) - cut)]
    kept = list(read_parts(short))
    assert [p.jpeg for p in kept] == [jpeg for jpeg, _ in items][: len(kept)]
    assert all(p.end <= len(short) for p in kept)


def test_a_part_is_what_mjpeg_readers_expect():
    assert part(b"\xff\xd8jpeg", 12.5) == (
        b"--pentarunclip\r\nContent-Type: image/jpeg\r\nContent-Length: 6\r\n"
        b"X-Timestamp: 12.500\r\n\r\n\xff\xd8jpeg\r\n"
    )


def test_ids_sort_by_start_and_name_files_safely():
    early, late = new_clip_id(1_700_000_000.0, "0a0b0c0d"), new_clip_id(1_700_000_001.5, "00000000")
    assert CLIP_ID.fullmatch(early) and early < late
    with pytest.raises(ValueError):
        new_clip_id(1.0, "../x")
    clips = ClipDir(__import__("pathlib").Path("/nonexistent"))
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(ValueError):
            clips.property_dir(bad)
    with pytest.raises(ValueError):
        clips.data_path("p1", "../../etc/passwd")


def meta(clip_id, **kw):
    fields = dict(
        id=clip_id, property_id="p1", camera="c1", started_at=100.0, ended_at=100.0,
        frames=0, bytes=0, trigger="request", by="plugin:x", finished=False,
    )  # fmt: skip
    return ClipMeta(**{**fields, **kw})


def test_load_recovers_a_clip_cut_short_and_drops_an_empty_one(tmp_path):
    clips = ClipDir(tmp_path)
    cut, empty, done = (new_clip_id(100 + i, f"0000000{i}") for i in range(3))
    writer = ClipWriter(clips.data_path("p1", cut))
    writer.write(b"one", 101.0)
    writer.write(b"two", 102.0)
    writer.close()
    with clips.data_path("p1", cut).open("ab") as handle:
        handle.write(part(b"three", 103.0)[:-5])  # the crash
    clips.write_meta(meta(cut))
    clips.write_meta(meta(empty))
    clips.data_path("p1", empty).write_bytes(b"--pentarunclip\r\nContent-")
    clips.write_meta(meta(done, finished=True, frames=1, bytes=10))
    (tmp_path / "p1" / "notes.json").write_text("{}")  # not a clip: ignored

    loaded = {m.id: m for m in clips.load()}
    assert set(loaded) == {cut, done}
    recovered = loaded[cut]
    assert (recovered.frames, recovered.finished, recovered.ended_at) == (2, True, 102.0)
    assert recovered.bytes == clips.data_path("p1", cut).stat().st_size
    assert [p.jpeg for p in read_parts(clips.data_path("p1", cut).read_bytes())] == [
        b"one",
        b"two",
    ]
    assert not clips.data_path("p1", empty).exists() and not clips.meta_path("p1", empty).exists()
    on_disk = msgspec.json.decode(clips.meta_path("p1", cut).read_bytes(), type=ClipMeta)
    assert on_disk == recovered
    data, size = read_range(clips.data_path("p1", cut), 2, 5)
    assert (len(data), size) == (5, recovered.bytes)
    assert clips.remove("p1", cut) == size and clips.load() == [loaded[done]]
