"""The security rating where operators see it: the plugin detail and list, and the install
waiting for approval, beside the approval, never inside its digest."""

import msgspec

from pentarun.packages.approval import Approval, digest_of
from pentarun.registry import Registry

from .factory import definition, package
from .fakes import world


def sandbox(installs, mode):
    security = msgspec.structs.replace(installs.config.security, sandbox=mode)
    installs.config = msgspec.structs.replace(installs.config, security=security)


async def test_the_pending_approval_shows_the_rating_beside_an_unchanged_digest(tmp_path):
    async with world(tmp_path) as w:
        await w.installs.upload(package(definition(scopes=["cameras:write"])), "op")
        await w.installs.wait_settled("demo")
        view = w.installs.describe("demo")["install"]
        pending = view["pending_approval"]
        assert "security_rating" not in pending
        assert digest_of(msgspec.convert(pending, Approval)) == pending["digest"]
        rating = view["security_rating"]
        assert rating["score"] == 4
        assert [r["rule"] for r in rating["reasons"]] == ["sandbox", "write_scopes"]

        sandbox(w.installs, "off")
        grants = ["192.168.1.20:554"]
        off = w.installs.describe("demo", egress_grants=grants)["install"]
        assert off["pending_approval"] == pending  # the same digest to echo
        assert off["security_rating"]["score"] == 1
        assert off["security_rating"]["reasons"][0]["rule"] == "sandbox"
        assert "egress_grants" in [r["rule"] for r in off["security_rating"]["reasons"]]

        await w.installs.approve("demo", pending["digest"], "op")
        (approved,) = await w.audit("plugin.approved")
        assert approved["detail"]["security_rating"] == 1  # as it stood when approved


async def test_the_detail_has_the_rating_with_reasons_and_the_list_only_its_score(tmp_path):
    async with world(tmp_path) as w:
        await w.installs.upload(package(), "op")
        await w.installs.wait_settled("demo")
        registry = Registry(w.db, w.supervisor, w.installs)
        detail = registry.detail("demo")
        assert detail["security_rating"]["score"] == 6
        assert {r["rule"] for r in detail["security_rating"]["reasons"]} == {
            "sandbox",
            "least_privilege",
        }
        row = registry.plugin("demo")
        assert registry.summary(row)["security_rating"] == {"score": 6}
        assert registry.summary(row, ["10.0.0.5:80"])["security_rating"] == {"score": 4}
        assert (
            w.installs.describe("demo")["install"]["security_rating"] == detail["security_rating"]
        )
