"""The update catalog: which version is newest, and a scan that reads only plugin.id."""

import os

from hypothesis import given
from hypothesis import strategies as st

from pentarun.packages.catalog import Catalog, CatalogEntry, newest, read_entry

from .factory import definition, package, raw_zip


def entry(key, version):
    return CatalogEntry(key, version, f"{key}-{version}.zip", "tests", False, 1)


def test_the_newest_version_above_the_installed_one():
    entries = [
        entry("cam", "1.2.0"),
        entry("cam", "1.10.0"),
        entry("cam", "bogus"),
        entry("nvr", "9.0.0"),
    ]
    assert newest(entries, "cam").version == "1.10.0"  # by version, not by text
    assert newest(entries, "cam", "1.10.0") is None
    assert newest(entries, "cam", "1.3.0").version == "1.10.0"
    assert newest(entries, "other") is None


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)), min_size=1))
def test_newest_is_the_maximum(versions):
    entries = [entry("k", ".".join(map(str, v))) for v in versions]
    assert newest(entries, "k").version == ".".join(map(str, max(versions)))


async def test_a_scan_reads_packages_and_skips_what_is_not_one(tmp_path):
    (tmp_path / "demo-1.1.0.zip").write_bytes(package(definition(version="1.1.0")))
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    (tmp_path / "noid.zip").write_bytes(raw_zip([("README.md", b"x")]))
    (tmp_path / "notes.txt").write_text("ignored")
    catalog = Catalog(str(tmp_path), 10 * 2**20, 30)
    entries = await catalog.rescan()
    assert [(e.key, e.version, e.file) for e in entries] == [("demo", "1.1.0", "demo-1.1.0.zip")]
    assert catalog.update_for("demo", "1.0.0").version == "1.1.0"
    assert catalog.update_for("demo", "1.1.0") is None
    entry_, data = await catalog.package("demo")
    assert data == (tmp_path / "demo-1.1.0.zip").read_bytes() and entry_.version == "1.1.0"


def test_an_oversized_zip_is_not_opened(tmp_path):
    path = tmp_path / "big.zip"
    path.write_bytes(package())
    assert read_entry(path, max_bytes=10) is None
    assert read_entry(path, max_bytes=os.path.getsize(path)).key == "demo"


async def test_without_a_directory_there_is_nothing(tmp_path):
    catalog = Catalog("", 2**20, 30)
    assert not catalog.configured and await catalog.rescan() == []
