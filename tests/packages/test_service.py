"""The install service with a fake supervisor and fake gates: no worker process starts here.

Covers what the service decides: the pipeline driven by operators and by the supervisor's
`Quarantined` events, probation (scheduled, passed, failed, cancelled, rescheduled after a
restart), the one approval digest, trusted keys honoured without a restart, and plugins run
from source through the same start path.
"""

import base64
import time

import msgspec
import pytest

from pentarun.errors import BadRequest, Conflict, NotFound, Unprocessable
from pentarun.packages.builder import pack, sign_package
from pentarun.packages.pipeline import Stage
from pentarun.registry import read_source_definition
from pentarun.security import signing
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.policy import Phase

from .factory import definition, files_of, package, source
from .fakes import world


async def test_enable_starts_the_worker_and_opens_its_listener(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        actor = w.supervisor.directory.get("demo")
        assert actor.phase is Phase.RUNNING and "demo" in w.ports.bound
        manifest = records.get_plugin(w.db, "demo").manifest
        assert manifest.key == "demo" and manifest.handlers == ["demo.echo"]  # typed
        assert records.installs_of(w.db, "demo")[0].manifest == manifest
        await w.installs.disable("demo", [], "op")
        assert w.state() == "DISABLED" and "demo" not in w.ports.bound


async def test_a_crash_loop_after_serving_well_is_released_by_probation(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        w.quarantined_by_policy(probation=True)
        await w.until(lambda: w.state() == "QUARANTINED")
        assert "demo" not in w.ports.bound  # the listener closed with the worker
        await w.until(lambda: w.state() == "ENABLED")
        detail = records.get_plugin(w.db, "demo")
        assert detail.reason == "verified; released by probation attempt 1"
        assert w.supervisor.directory.get("demo").phase is Phase.RUNNING
        assert "demo" in w.ports.bound and w.ports.opened.count("demo") == 2
        assert records.assigned_properties(w.db, "demo") == ["p1"]  # its properties kept
        scheduled = await w.events(kind="probation_scheduled")
        assert len(scheduled) == 1 and scheduled[0].next_retry_at is not None
        (attempt,) = await w.events(kind="probation_attempt")
        assert attempt.detail["result"] == "passed" and attempt.detail["attempt"] == 1
        run = records.test_run(w.db, attempt.detail["run_id"])
        assert run is not None and run.status == "passed" and run.report["ok"]
        (audited,) = await w.audit("plugin.probation_attempt")
        assert audited["plugin"] == "demo" and audited["detail"]["run_id"] == run.id


async def test_failed_attempts_are_each_recorded_and_bounded(tmp_path):
    async with world(tmp_path, probation_attempts=2) as w:
        await w.enabled()
        w.gates.fail_full_suites = 5
        w.quarantined_by_policy(probation=True)

        async def two_attempts():
            return len(await w.events(kind="probation_attempt")) == 2

        await w.until(two_attempts)
        await w.until(lambda: not w.job().running)
        found = await w.events(kind="probation_attempt")
        assert [e.detail["result"] for e in found] == ["failed", "failed"]
        assert [e.detail["attempt"] for e in reversed(found)] == [1, 2]
        assert found[0].detail["next_attempt_at"] is None  # the last one
        assert found[1].detail["next_attempt_at"] is not None
        assert len({e.detail["run_id"] for e in found}) == 2  # each with its own report
        for event in found:
            assert records.test_run(w.db, event.detail["run_id"]).status == "failed"
        assert w.state() == "QUARANTINED" and w.gates.full_suites == 3  # install + 2 attempts
        assert w.job().probation_due_at is None
        assert len(await w.audit("plugin.probation_attempt")) == 2


async def test_no_probation_without_a_proven_worker_or_when_turned_off(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        w.quarantined_by_policy(probation=False)
        await w.until(lambda: w.state() == "QUARANTINED")
        assert w.job().probation_due_at is None
    async with world(tmp_path / "off", probation_attempts=0) as w:
        await w.enabled()
        w.quarantined_by_policy(probation=True)
        await w.until(lambda: w.state() == "QUARANTINED")
        assert w.job().probation_due_at is None


async def test_an_operator_release_or_quarantine_or_uninstall_cancels_probation(tmp_path):
    async with world(tmp_path, probation_s=3600) as w:
        await w.enabled()
        row_id = records.installs_of(w.db, "demo")[-1].id
        w.quarantined_by_policy(probation=True)
        await w.until(lambda: w.installs.driver.probation_due(row_id) is not None)
        await w.installs.release("demo", "op")
        assert w.installs.driver.probation_due(row_id) is None
        await w.installs.wait_settled("demo")
        assert w.state() == "VERIFIED"  # an operator's release does not enable

        await w.installs.enable("demo", [], "op")
        w.quarantined_by_policy(probation=True)
        await w.until(lambda: w.installs.driver.probation_due(row_id) is not None)
        await w.installs.quarantine("demo", "keep it off", "op")
        assert w.installs.driver.probation_due(row_id) is None
        assert w.job().probation_due_at is None and "probation cancelled" in w.job().reason

        await w.installs.release("demo", "op")
        await w.installs.wait_settled("demo")
        await w.installs.enable("demo", [], "op")
        w.quarantined_by_policy(probation=True)
        await w.until(lambda: w.installs.driver.probation_due(row_id) is not None)
        await w.installs.uninstall("demo", "op")
        assert w.installs.driver.probation_due(row_id) is None
        assert w.state() is None


async def test_a_pending_probation_survives_a_restart(tmp_path):
    async with world(tmp_path, probation_s=3600) as w:
        await w.enabled()
        w.quarantined_by_policy(probation=True)
        await w.until(lambda: w.job().probation_due_at is not None)
        row = records.installs_of(w.db, "demo")[-1]
        # the server was down past the due time
        overdue = msgspec.structs.replace(w.job(), probation_due_at=time.time() - 1)
        await records.save_install(w.db, row.id, msgspec.to_builtins(overdue))
    async with world(tmp_path, probation_s=3600) as w:
        await w.until(lambda: w.state() == "ENABLED")
        assert w.supervisor.directory.get("demo").phase is Phase.RUNNING
        reasons = [e.reason for e in await w.events(kind="probation_scheduled")]
        assert "probation rescheduled after a restart" in reasons


async def test_pending_approval_has_one_digest_and_every_scope(tmp_path):
    async with world(tmp_path) as w:
        data = package(definition(scopes=["properties:read", "cameras:write"]))
        row = await w.installs.upload(data, "op")
        view = w.installs.describe("demo")["install"]
        pending = view["pending_approval"]
        assert view["state"] == "DEPENDENCIES_PENDING"
        assert [k for k in pending if "digest" in k] == ["digest"]
        assert pending["scopes"] == [
            {"scope": "properties:read", "level": "read", "risk": 5, "needs_approval": False},
            {"scope": "cameras:write", "level": "write", "risk": 30, "needs_approval": True},
        ]
        assert pending["package"]["sha256"] == row.package_digest
        with pytest.raises(Conflict, match="package's sha256") as wrong:
            await w.installs.approve("demo", row.package_digest, "op")
        assert wrong.value.details["echo"] == "pending_approval.digest"
        with pytest.raises(Conflict, match=r"echo pending_approval\.digest"):
            await w.installs.approve("demo", "0" * 64, "op")
        await w.installs.approve("demo", pending["digest"], "op")
        settled = await w.installs.wait_settled("demo")
        assert settled.job["stage"] == "VERIFIED"


def signed(private_pem, key_id="acme"):
    return sign_package(files_of(pack(source(), "acme")), private_pem, key_id)


async def test_trusted_keys_are_honoured_without_a_restart(tmp_path):
    private_pem, public_pem = signing.generate_key()
    public_b64 = base64.b64encode(signing.load_public_key(public_pem).public_bytes_raw()).decode()
    async with world(tmp_path) as w:
        assert w.installs.trusted_keys() == []
        with pytest.raises(Unprocessable) as refused:
            await w.installs.upload(signed(private_pem), "op")
        assert refused.value.details["problems"][0]["code"] == "signature.untrusted_key"
        added = await w.installs.add_trusted_key("acme", public_b64, "operator:root")
        assert added["key_id"] == "acme" and added["public_key"] == public_b64
        listed = w.installs.trusted_keys()
        assert [k["key_id"] for k in listed] == ["acme"] and listed[0]["added_at"] > 0
        await w.installs.upload(signed(private_pem), "op")  # honoured at once
        (audit,) = await w.audit("trust.key_added")
        assert audit["actor"] == "operator:root" and audit["detail"]["key_id"] == "acme"

        await w.installs.remove_trusted_key("acme", "operator:root")
        assert w.installs.trusted_keys() == []
        assert len(await w.audit("trust.key_removed")) == 1
        with pytest.raises(NotFound):
            await w.installs.remove_trusted_key("acme", "operator:root")

        # a key copied into the directory by hand counts at once too
        (tmp_path / "trust" / "hand.pub").write_bytes(public_pem)
        assert [k["key_id"] for k in w.installs.trusted_keys()] == ["hand"]


@pytest.mark.parametrize(
    ("key_id", "public_key", "field"),
    [
        ("../evil", "AAAA", "key_id"),
        ("ok", "not base64!", "public_key"),
        ("ok", "QUJD", "public_key"),  # 3 bytes
    ],
)
async def test_trusted_keys_are_validated(tmp_path, key_id, public_key, field):
    async with world(tmp_path) as w:
        with pytest.raises(BadRequest) as refused:
            await w.installs.add_trusted_key(key_id, public_key, "op")
        assert refused.value.details["field"] == field
        assert not (tmp_path / "trust").exists() or not list((tmp_path / "trust").iterdir())


async def test_source_plugins_use_the_same_start_path(tmp_path):
    tree = tmp_path / "src"
    raw = definition(listener={"name": "demo", "port": 8200}, routes=[
        {"method": "GET", "path": "/echo", "handler": "demo.echo", "listener": "demo"}])  # fmt: skip
    for name, data in source(raw).items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    root, manifest = read_source_definition(tree)
    async with world(tmp_path) as w:
        await w.installs.run_from_source(root, manifest)
        row = records.get_plugin(w.db, "demo")
        assert (row.state, row.reason, row.source_dir) == (
            "ENABLED",
            "running from source",
            str(root),
        )
        assert row.manifest == manifest and w.ports.bound["demo"] == manifest  # listener bound
        assert w.supervisor.directory.get("demo").phase is Phase.RUNNING
        w.quarantined_by_policy(probation=True)  # one writer: the service records it
        await w.until(lambda: w.state() == "QUARANTINED")
        assert "demo" not in w.ports.bound
        with pytest.raises(Conflict, match="runs from source"):
            await w.installs.release("demo", "op")
    async with world(tmp_path) as w:  # a later run without --plugin-dir: not running
        assert w.state() == "QUARANTINED"  # a quarantine is kept as it is


async def test_a_stale_enabled_source_row_is_marked_not_running(tmp_path):
    async with open_database(tmp_path / "pentarun.db") as db:
        await records.upsert_plugin(
            db, "old", name="Old", version="1.0.0", state="ENABLED", reason="running from source"
        )
    async with world(tmp_path) as w:
        row = records.get_plugin(w.db, "old")
        assert row.state == Stage.DISABLED.value and "--plugin-dir" in row.reason


async def test_a_refused_enable_changes_nothing(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        await records.create_property(w.db, "p2", "P2")
        await w.installs.quarantine("demo", "keep it off", "op")
        with pytest.raises(Conflict, match="QUARANTINED plugin cannot be enabled"):
            await w.installs.enable("demo", ["p2"], "op")
        assert records.assigned_properties(w.db, "demo") == ["p1"]  # p2 not assigned
        assert len(await w.audit("plugin.enabled")) == 1  # only the first enable
        assert w.state() == "QUARANTINED"


async def test_an_accepted_enable_assigns_its_properties(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        await records.create_property(w.db, "p2", "P2")
        await w.installs.enable("demo", ["p2"], "op")  # already ENABLED: more properties
        assert sorted(records.assigned_properties(w.db, "demo")) == ["p1", "p2"]
        with pytest.raises(NotFound):
            await w.installs.enable("demo", ["nope"], "op")


async def test_the_package_is_inspected_only_where_it_must_be(tmp_path, monkeypatch):
    """upload, validate (the live trust store) and install (the files, after a possibly long
    approval); the suites and the self-test read the manifest and plan stored at upload."""
    async with world(tmp_path) as w:
        inspected = []
        inspect = w.installs.reader.inspect

        async def counting(data, exclude=""):
            inspected.append(exclude)
            return await inspect(data, exclude)

        monkeypatch.setattr(w.installs.reader, "inspect", counting)
        await w.enabled()
        assert len(inspected) == 3
        plan = w.job().test_plan
        assert plan is not None and [c.name for c in plan.cases] == ["echoes"]
        assert w.gates.plans and all(p == plan for p in w.gates.plans)

        run_id = await w.installs.run_tests("demo", "op")
        await w.until(lambda: records.test_run(w.db, run_id).status == "passed")
        await w.installs.quarantine("demo", "check it", "op")
        await w.installs.release("demo", "op")
        await w.installs.wait_settled("demo")
        assert w.state() == "VERIFIED" and len(inspected) == 3


async def test_a_job_stored_without_its_plan_reads_it_from_the_package(tmp_path, monkeypatch):
    async with world(tmp_path) as w:
        await w.enabled()
        row = records.installs_of(w.db, "demo")[-1]
        older = {k: v for k, v in row.job.items() if k != "test_plan"}  # an earlier version's
        await records.save_install(w.db, row.id, older)
        assert w.job().test_plan is None
        run_id = await w.installs.run_tests("demo", "op")
        await w.until(lambda: records.test_run(w.db, run_id).status == "passed")
        assert [c.name for c in w.gates.plans[-1].cases] == ["echoes"]
