"""Integrity at every start, through the install service (fake supervisor, fake gates): a tree
that differs from what was installed never starts and is quarantined with the evidence."""

from pentarun.packages.installer import Layout
from pentarun.store import records
from pentarun.supervisor.policy import Phase

from .fakes import world


def tree_of(w, key="demo"):
    row = records.installs_of(w.db, key)[-1]
    return Layout(w.installs.layout.data_dir).tree(key, row.id)


def tamper(w, name="worker/plugin_worker.py", data=b"\nopen('/tmp/pwned', 'w')\n"):
    with open(tree_of(w) / name, "ab") as file:
        file.write(data)


async def failures(w):
    return await w.events(kind="integrity_failed")


async def test_a_changed_file_is_quarantined_at_enable_and_never_started(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        actor = w.supervisor.directory.get("demo")
        assert actor.starts == 1
        await w.installs.disable("demo", [], "op")
        tamper(w)
        await w.installs.enable("demo", ["p1"], "op")
        await w.until(lambda: w.state() == "QUARANTINED")
        assert actor.starts == 1 and "demo" not in w.ports.bound
        reason = records.get_plugin(w.db, "demo").reason
        assert "integrity check before start failed" in reason
        assert "changed worker/plugin_worker.py" in reason
        (event,) = await failures(w)
        assert event.detail["changed"] == ["worker/plugin_worker.py"]
        assert event.detail["missing"] == [] and event.detail["extra"] == []
        assert event.detail["before"] == "start"
        (audited,) = await w.audit("plugin.integrity_failed")
        assert audited["actor"] == "integrity" and audited["plugin"] == "demo"
        assert w.job().probation_due_at is None  # no probation for a tampered tree


async def test_a_changed_tree_is_not_started_when_the_server_starts(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        tamper(w)
    async with world(tmp_path) as w:  # a restart: recovery starts every enabled plugin
        await w.until(lambda: w.state() == "QUARANTINED")
        assert w.supervisor.directory.get("demo") is None  # no actor was even made
        assert (await failures(w))[0].detail["changed"] == ["worker/plugin_worker.py"]


async def test_a_release_of_a_changed_tree_runs_none_of_its_code(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        await w.installs.quarantine("demo", "look at it", "op")
        tamper(w, "worker/extra.py", b"print('not in plugin.id')\n")
        suites = w.gates.full_suites
        await w.installs.release("demo", "op")
        await w.installs.wait_settled("demo")
        assert w.state() == "QUARANTINED"
        assert "release failed" in w.job().reason and "extra worker/extra.py" in w.job().reason
        assert w.gates.full_suites == suites  # the test gates never started its worker
        (event,) = await failures(w)
        assert event.detail["extra"] == ["worker/extra.py"] and event.detail["before"] == "testing"


async def test_a_site_where_none_was_installed_is_caught(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        row = records.installs_of(w.db, "demo")[-1]
        assert row.site_hashes == {}  # recorded at install: no requirements, no site/
        await w.installs.disable("demo", [], "op")
        (tree_of(w) / "site").mkdir()
        (tree_of(w) / "site" / "sitecustomize.py").write_text("print('runs first')\n")
        await w.installs.enable("demo", [], "op")
        await w.until(lambda: w.state() == "QUARANTINED")
        assert (await failures(w))[0].detail["extra"] == ["site/sitecustomize.py"]


async def test_an_untouched_tree_starts_and_a_restored_one_can_be_released(tmp_path):
    async with world(tmp_path) as w:
        await w.enabled()
        path = tree_of(w) / "worker/plugin_worker.py"
        original = path.read_bytes()
        await w.installs.disable("demo", [], "op")
        tamper(w)
        await w.installs.enable("demo", [], "op")
        await w.until(lambda: w.state() == "QUARANTINED")
        path.write_bytes(original)
        await w.installs.release("demo", "op")
        await w.installs.wait_settled("demo")
        assert w.state() == "VERIFIED"
        await w.installs.enable("demo", [], "op")
        assert w.supervisor.directory.get("demo").phase is Phase.RUNNING
