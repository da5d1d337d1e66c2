"""The integrity check of an installed tree and the stat cache that makes it cheap."""

import hashlib
import os
import time

import pytest

from pentarun.packages.integrity import (
    DigestCache,
    ExpectedTree,
    Integrity,
    check_tree,
    diff_of,
    evidence,
    hash_site,
    sha256_of,
    summary,
)

FILES = {
    "definition.json": b"{}",
    "worker/plugin_worker.py": b"print('hello')\n",
    "worker/helper.py": b"X = 1\n",
    "README.md": b"# demo\n",
}
LONG_AGO = 10**12  # ns: ahead of the clock by this much, every file looks old (not racy)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def make_tree(root, files=FILES, site=None):
    for name, data in {**files, **{f"site/{k}": v for k, v in (site or {}).items()}}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "plugin.id").write_text("{}")
    return root


def expected(files=FILES, site=None):
    return ExpectedTree(
        {n: sha(d) for n, d in files.items()}, {n: sha(d) for n, d in (site or {}).items()}
    )


class CountingHasher:
    def __init__(self):
        self.reads: list[int] = []

    def __call__(self, file):
        self.reads.append(file.fileno())
        return sha256_of(file)


def old_cache(hasher=None):
    """A cache whose clock says every file was written long ago (so each is cached)."""
    return DigestCache(hasher or sha256_of, clock=lambda: time.time_ns() + LONG_AGO)


def codes(problems):
    return [(p.code, p.path) for p in problems]


def test_an_untouched_tree_passes(tmp_path):
    tree = make_tree(tmp_path / "t")
    assert check_tree(tree, expected(), DigestCache()) == []


def test_an_unchanged_tree_costs_a_stat_per_file_not_a_read(tmp_path):
    tree = make_tree(tmp_path / "t")
    hasher = CountingHasher()
    cache = old_cache(hasher)
    assert check_tree(tree, expected(), cache) == []
    assert len(hasher.reads) == len(FILES)  # plugin.id is never read
    assert len(cache) == len(FILES)
    for _ in range(3):
        assert check_tree(tree, expected(), cache) == []
    assert len(hasher.reads) == len(FILES)


def test_a_changed_byte_is_caught_with_size_and_mtime_restored(tmp_path):
    tree = make_tree(tmp_path / "t")
    cache = DigestCache(racy_ns=10_000_000)  # 10 ms: the real clock, a short racy window
    time.sleep(0.05)
    assert check_tree(tree, expected(), cache) == []
    assert len(cache) == len(FILES)  # cached: old enough
    target = tree / "worker/plugin_worker.py"
    before = os.stat(target)
    target.write_bytes(b"print('HELLO')\n")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert codes(check_tree(tree, expected(), cache)) == [
        ("integrity.changed", "worker/plugin_worker.py")
    ]


def test_a_change_in_the_same_tick_as_the_hashing_is_caught(tmp_path):
    """A file hashed right after it was written is not cached (its ctime could be shared with
    a change that follows at once, on a coarse clock): it is read again next time."""
    tree = make_tree(tmp_path / "t")
    hasher = CountingHasher()
    cache = DigestCache(hasher)  # the real clock and the default window: every file is racy
    assert check_tree(tree, expected(), cache) == []
    assert len(cache) == 0
    target = tree / "worker/helper.py"
    before = os.stat(target)
    target.write_bytes(b"X = 2\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert codes(check_tree(tree, expected(), cache)) == [("integrity.changed", "worker/helper.py")]
    assert len(hasher.reads) == 2 * len(FILES)


def test_a_file_replaced_by_a_new_one_is_read_again(tmp_path):
    tree = make_tree(tmp_path / "t")
    hasher = CountingHasher()
    cache = old_cache(hasher)
    check_tree(tree, expected(), cache)
    target = tree / "README.md"
    (tree / "swap").write_bytes(b"# evil\n")  # same size, a new inode, renamed over it
    os.replace(tree / "swap", target)
    assert codes(check_tree(tree, expected(), cache)) == [("integrity.changed", "README.md")]
    assert len(hasher.reads) == len(FILES) + 1  # only the new file was read again


def test_missing_and_extra_files_are_named(tmp_path):
    tree = make_tree(tmp_path / "t")
    (tree / "README.md").unlink()
    (tree / "worker/evil.py").write_text("import os\n")
    (tree / "worker/__pycache__").mkdir()
    (tree / "worker/__pycache__/helper.cpython-311.pyc").write_bytes(b"\x00" * 16)
    problems = check_tree(tree, expected(), DigestCache())
    assert codes(problems) == [
        ("integrity.missing", "README.md"),
        ("integrity.extra", "worker/__pycache__/helper.cpython-311.pyc"),
        ("integrity.extra", "worker/evil.py"),
    ]
    diff = diff_of(problems)
    assert diff.missing == ["README.md"] and len(diff.extra) == 2 and diff.changed == []
    assert summary(problems, shown=2) == (
        "missing README.md; extra worker/__pycache__/helper.cpython-311.pyc; and 1 more"
    )


def test_links_are_never_followed_and_special_files_never_opened(tmp_path):
    tree = make_tree(tmp_path / "t")
    outside = tmp_path / "outside.py"
    outside.write_bytes(FILES["worker/helper.py"])  # the same content, elsewhere
    (tree / "worker/helper.py").unlink()
    (tree / "worker/helper.py").symlink_to(outside)
    os.mkfifo(tree / "worker/pipe")  # opening it for reading would block
    (tree / "linked").symlink_to(tmp_path, target_is_directory=True)
    assert codes(check_tree(tree, expected(), DigestCache())) == [
        ("integrity.extra", "linked"),
        ("integrity.changed", "worker/helper.py"),
        ("integrity.extra", "worker/pipe"),
    ]


def test_a_missing_tree_is_one_problem(tmp_path):
    assert codes(check_tree(tmp_path / "gone", expected(), DigestCache())) == [
        ("integrity.missing", ".")
    ]


def test_site_is_checked_against_its_record(tmp_path):
    site = {"greeter.py": b"def greet(): ...\n", "greeter-1.0.dist-info/RECORD": b"r\n"}
    tree = make_tree(tmp_path / "t", site=site)
    cache = DigestCache()
    recorded = hash_site(tree, cache)
    assert recorded == {name: sha(data) for name, data in site.items()}
    want = ExpectedTree(expected().files, recorded)
    assert check_tree(tree, want, cache) == []
    (tree / "site/greeter.py").write_bytes(b"import os; os.system('x')\n")
    (tree / "site/sitecustomize.py").write_bytes(b"print('in every start')\n")
    assert codes(check_tree(tree, want, cache)) == [
        ("integrity.changed", "site/greeter.py"),
        ("integrity.extra", "site/sitecustomize.py"),
    ]


def test_a_site_where_none_was_installed_is_extra_and_an_unrecorded_one_is_skipped(tmp_path):
    tree = make_tree(tmp_path / "t", site={"evil.py": b"x = 1\n"})
    assert codes(check_tree(tree, expected(), DigestCache())) == [
        ("integrity.extra", "site/evil.py")
    ]
    legacy = ExpectedTree(expected().files, None)  # installed before site/ was recorded
    assert check_tree(tree, legacy, DigestCache()) == []
    assert hash_site(tmp_path / "t" / "worker", DigestCache()) == {}


async def test_verify_before_start_skips_a_tree_without_an_install(tmp_path):
    tree = make_tree(tmp_path / "demo" / "0123")
    integrity = Integrity(None, old_cache())
    assert await integrity.verify_before_start("demo", tree) == []  # no database: a source tree
    (tree / "README.md").write_text("changed")
    problems = await integrity.verify_before_start("demo", tree, expected())
    assert codes(problems) == [("integrity.changed", "README.md")]


async def test_an_installed_tree_without_its_install_row_is_refused(tmp_path):
    tree = make_tree(tmp_path / "plugins" / "demo" / "0123")
    integrity = Integrity(None, old_cache(), installed_root=tmp_path / "plugins")
    problems = await integrity.verify_before_start("demo", tree)
    assert codes(problems) == [("integrity.unrecorded", ".")]
    assert summary(problems) == "an installed tree with no install record"
    assert evidence(problems)["unrecorded"] is True
    source = make_tree(tmp_path / "src" / "demo")  # --plugin-dir: outside the installed root
    assert await integrity.verify_before_start("demo", source) == []


@pytest.mark.parametrize("entries", [10, 1000])
def test_the_cache_is_bounded(tmp_path, entries):
    tree = make_tree(tmp_path / "t", {f"f{i}": b"x" for i in range(entries)})
    cache = DigestCache(max_entries=100, clock=lambda: time.time_ns() + LONG_AGO)
    check_tree(tree, expected({f"f{i}": b"x" for i in range(entries)}), cache)
    assert len(cache) <= 100


def test_the_evidence_names_each_kind_and_is_bounded(tmp_path):
    tree = make_tree(tmp_path / "t")
    for i in range(150):
        (tree / f"junk{i:03}.py").write_text("")
    (tree / "README.md").write_text("changed")
    found = evidence(check_tree(tree, expected(), DigestCache()))
    assert found["changed"] == ["README.md"] and found["missing"] == []
    assert len(found["extra"]) == 100 and found["extra"][0] == "junk000.py"
    assert found["counts"] == {"changed": 1, "missing": 0, "extra": 150}


def test_a_tree_that_cannot_be_read_fails_closed(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "t")

    def unreadable(root):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr("pentarun.packages.integrity.scan", unreadable)
    (problem,) = check_tree(tree, expected(), DigestCache())
    assert problem.code == "integrity.changed" and "could not be read" in problem.message
