"""The bad-package corpus: one case per rule, each asserting its code and path."""

import json
import random
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pentarun.packages.archive import ArchiveLimits
from pentarun.packages.builder import pack, sign_package, zip_files
from pentarun.packages.package import InspectContext, inspect_files, inspect_package
from pentarun.security import signing

from .factory import definition, files_of, package, raw_zip, source, unix_entry

CTX = InspectContext(engine_version="0.1.0")


def problems_of(data: bytes, ctx: InspectContext = CTX) -> set[tuple[str, str]]:
    found, problems = inspect_package(data, ctx)
    assert found is None, "expected the package to be refused"
    return {(p.code, p.path) for p in problems}


def repack(files: dict[str, bytes]) -> bytes:
    """Zip files as they are, plugin.id untouched (so hashes may now be wrong)."""
    return zip_files(files)


def test_a_valid_package_passes():
    found, problems = inspect_package(package(), CTX)
    assert problems == []
    assert found is not None and found.key == "demo" and found.version == "1.0.0"
    assert found.plugin_id is not None and found.plugin_id.publisher == "tests"
    assert found.test_plan.cases[0].name == "echoes"


def test_packing_is_deterministic():
    assert package() == package()


GOOD = source()


def _mode_zip(mode: int) -> bytes:
    return raw_zip([(unix_entry("README.md", mode), b"x")])


ARCHIVE_CASES = [
    ("corrupt", lambda: b"PK\x03\x04 definitely not a zip", "archive.corrupt", ""),
    ("absolute path", lambda: raw_zip([("/etc/passwd", b"x")]), "archive.absolute_path", "/etc/passwd"),
    ("traversal", lambda: raw_zip([("worker/../../x.py", b"x")]), "archive.path_traversal", "worker/../../x.py"),
    ("backslash", lambda: raw_zip([("worker\\x.py", b"x")]), "archive.bad_path", "worker\\x.py"),
    ("dot component", lambda: raw_zip([("./README.md", b"x")]), "archive.bad_path", "./README.md"),
    ("symlink", lambda: _mode_zip(stat.S_IFLNK | 0o777), "archive.symlink", "README.md"),
    ("fifo", lambda: _mode_zip(stat.S_IFIFO | 0o644), "archive.special_file", "README.md"),
    ("duplicate", lambda: raw_zip([("README.md", b"a"), ("README.md", b"b")]), "archive.duplicate_name", "README.md"),
    ("case duplicate", lambda: raw_zip([("README.md", b"a"), ("readme.md", b"b")]), "archive.duplicate_name", "README.md"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "build", "code", "path"), ARCHIVE_CASES, ids=[c[0] for c in ARCHIVE_CASES]
)
def test_archive_rules(name, build, code, path):
    assert (code, path) in problems_of(build())


def test_encrypted_entries_are_refused():
    data = bytearray(raw_zip([("README.md", b"x")]))
    central = data.index(b"PK\x01\x02")
    data[6] |= 0x1  # general purpose flag, bit 0: encrypted (local header)
    data[central + 8] |= 0x1  # ... and in the central directory
    assert ("archive.encrypted", "README.md") in problems_of(bytes(data))


def test_limits_are_enforced():
    tight = InspectContext(
        engine_version="0.1.0",
        limits=ArchiveLimits(
            max_files=3, max_total_bytes=10_000, max_file_bytes=5_000, max_ratio=50
        ),
    )
    bomb = raw_zip([("README.md", b"\0" * 4_000)])
    assert ("archive.compression_ratio", "README.md") in problems_of(bomb, tight)
    big = raw_zip([("a.bin", bytes(range(256)) * 24)])
    assert ("archive.file_too_large", "a.bin") in problems_of(big, tight)
    many = raw_zip([(f"f{i}", bytes([i]) * 10) for i in range(5)])
    assert ("archive.too_many_files", "") in problems_of(many, tight)
    noise = random.Random(0).randbytes(4_000)
    total = raw_zip([(f"f{i}", noise) for i in range(3)])
    assert ("archive.too_large", "") in problems_of(total, tight)
    assert ("archive.too_large", "") in problems_of(
        b"x" * 100,
        InspectContext(engine_version="0.1.0", limits=ArchiveLimits(max_package_bytes=10)),
    )


def test_missing_required_files_are_each_named():
    files = files_of(package())
    for name in ("definition.json", "tests/test_plan.json", "worker/plugin_worker.py", "README.md"):
        broken = {n: d for n, d in files.items() if n != name}
        assert ("package.missing_file", name) in problems_of(repack(broken))
    no_id = {n: d for n, d in files.items() if n != "plugin.id"}
    assert ("package.missing_file", "plugin.id") in problems_of(repack(no_id))


def test_integrity_rules():
    files = files_of(package())
    tampered = {**files, "README.md": b"# changed\n"}
    assert ("integrity.hash_mismatch", "README.md") in problems_of(repack(tampered))
    extra = {**files, "worker/extra.py": b"x = 1\n"}
    assert ("integrity.unlisted_file", "worker/extra.py") in problems_of(repack(extra))
    ident = json.loads(files["plugin.id"])
    ident["files"]["worker/ghost.py"] = "0" * 64
    ghost = {**files, "plugin.id": json.dumps(ident).encode()}
    assert ("integrity.missing_file", "worker/ghost.py") in problems_of(repack(ghost))
    ident["files"]["worker/ghost.py"] = "nothex"
    bad = {**files, "plugin.id": json.dumps(ident).encode()}
    assert ("integrity.bad_hash", "plugin.id:files.worker/ghost.py") in problems_of(repack(bad))
    assert ("plugin_id.invalid_json", "plugin.id") in problems_of(
        repack({**files, "plugin.id": b"{"})
    )
    assert ("plugin_id.invalid", "plugin.id") in problems_of(
        repack({**files, "plugin.id": b'{"key": "demo"}'})
    )


def test_identity_must_match_the_manifest():
    files = source()
    data = pack(files)
    ident = json.loads(files_of(data)["plugin.id"])
    ident["version"] = "2.0.0"
    found = problems_of(repack({**files_of(data), "plugin.id": json.dumps(ident).encode()}))
    assert ("manifest.identity_mismatch", "definition.json:version") in found


def test_signatures():
    private, public = signing.generate_key()
    trust = {"k1": signing.load_public_key(public)}
    signed = sign_package(files_of(package()), private, "k1")
    strict = InspectContext(engine_version="0.1.0", trust=trust, require_signatures=True)
    assert inspect_package(signed, strict)[1] == []
    assert ("signature.missing", "plugin.id:signature") in problems_of(package(), strict)
    other_private, _ = signing.generate_key()
    forged = sign_package(files_of(package()), other_private, "k1")
    assert ("signature.invalid", "plugin.id:signature.value") in problems_of(forged, strict)
    unknown = sign_package(files_of(package()), private, "k2")
    assert ("signature.untrusted_key", "plugin.id:signature.key_id") in problems_of(unknown, strict)
    files = files_of(signed)
    ident = json.loads(files["plugin.id"])
    ident["signature"]["alg"] = "rsa"
    assert ("signature.unsupported_alg", "plugin.id:signature.alg") in problems_of(
        repack({**files, "plugin.id": json.dumps(ident).encode()}), strict
    )
    # a signature over different content: change publisher after signing
    ident = json.loads(files["plugin.id"])
    ident["publisher"] = "evil"
    assert ("signature.invalid", "plugin.id:signature.value") in problems_of(
        repack({**files, "plugin.id": json.dumps(ident).encode()}), strict
    )


def test_syntax_errors_in_the_worker_are_reported_with_their_line():
    data = pack(source(**{"worker__plugin_worker.py": b"def broken(:\n"}))
    assert ("package.syntax_error", "worker/plugin_worker.py:1") in problems_of(data)


def test_requirements_rules():
    text = (
        b"msgspec>=0.18\n# comment\n--index-url http://evil\nrequests @ https://x/y.whl\nfoo bar\n"
    )
    found = problems_of(package(**{"requirements.txt": text}))
    assert ("requirements.option", "requirements.txt:3") in found
    assert ("requirements.direct_reference", "requirements.txt:4") in found
    assert ("requirements.invalid_line", "requirements.txt:5") in found
    good, problems = inspect_package(package(**{"requirements.txt": b"msgspec>=0.18,<1\n"}), CTX)
    assert problems == [] and good is not None and good.requirements == ["msgspec>=0.18,<1"]


def test_test_plan_rules():
    plan = {"cases": [
        {"name": "a", "category": "integration", "handler": "nope"},
        {"name": "a", "category": "weird", "handler": "demo.echo", "params": [], "expect": {"ok": True, "error": "x"}},
    ], "extra": 1}  # fmt: skip
    found = problems_of(package(**{"tests__test_plan.json": json.dumps(plan).encode()}))
    assert ("test_plan.undeclared_handler", "tests/test_plan.json:cases[0].handler") in found
    assert ("test_plan.duplicate", "tests/test_plan.json:cases[1].name") in found
    assert ("test_plan.invalid_value", "tests/test_plan.json:cases[1].category") in found
    assert ("test_plan.wrong_type", "tests/test_plan.json:cases[1].params") in found
    assert ("test_plan.invalid_value", "tests/test_plan.json:cases[1].expect") in found
    assert ("test_plan.unknown_field", "tests/test_plan.json:extra") in found
    assert ("test_plan.invalid_json", "tests/test_plan.json") in problems_of(
        package(**{"tests__test_plan.json": b"[oops"})
    )


def test_wizard_must_exist_when_declared():
    found = problems_of(package(definition(ui={"wizard": "ui/wizard.html"})))
    assert ("package.missing_file", "ui/wizard.html") in found


def test_all_problems_are_reported_at_once():
    broken = definition(
        key="Bad Key", traits=[], scopes=["nope:read"], resources={"memory_limit": 1}
    )
    codes = {code for code, _ in problems_of(package(broken))}
    assert {"manifest.invalid_key", "manifest.no_traits", "manifest.unknown_scope",
            "manifest.out_of_range"} <= codes  # fmt: skip


def test_source_trees_may_lack_plugin_id():
    found, problems = inspect_files(source(), CTX, require_identity=False)
    assert problems == [] and found is not None and found.plugin_id is None


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_zip_bytes_never_crash_the_validator(data):
    found, problems = inspect_package(data, CTX)
    assert found is None and problems


@settings(max_examples=200)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=50)), max_size=8))
def test_arbitrary_zip_entries_never_crash_the_validator(entries):
    try:
        data = raw_zip([(name, content) for name, content in entries])
    except (ValueError, UnicodeEncodeError, IndexError):  # names zipfile itself cannot write
        return
    found, problems = inspect_package(data, CTX)
    assert found is None and problems
