"""Operators: who may create and revoke whom (pure rules), and the audited shells."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import BadRequest, Conflict, Forbidden, NotFound
from pentarun.security import operators
from pentarun.store import records
from pentarun.store.db import open_database


def op(role: str, name: str = "someone", id_: str = "a" * 32) -> records.OperatorRow:
    return records.OperatorRow(id_, name, role, [], 0.0)


@given(
    st.sampled_from(operators.ROLES),
    st.sampled_from([*operators.ROLES, "god", ""]),
    st.text(max_size=5),
    st.lists(st.sampled_from(["p1", "p2"]), max_size=2),
)
def test_new_operator_rules(creator_role, role, name, properties):
    try:
        operators.check_new_operator(op(creator_role), name, role, properties)
    except BadRequest:
        assert (
            role not in operators.ROLES
            or not name.strip()
            or (role == "property_manager" and not properties)
        )
    except Forbidden:
        assert role == "root" and creator_role != "root"
    else:
        assert role in operators.ROLES and name.strip()
        assert role != "root" or creator_role == "root"


def test_revocation_rules():
    root, admin = op("root", id_="r" * 32), op("admin", id_="b" * 32)
    with pytest.raises(Conflict):
        operators.check_revocation(admin, admin)
    with pytest.raises(Forbidden):
        operators.check_revocation(admin, root)
    operators.check_revocation(root, admin)


def test_only_root_and_admin_manage_trusted_keys():
    holders = {role for role, perms in operators.PERMISSIONS.items() if operators.TRUST in perms}
    assert holders == {"root", "admin"}


async def test_create_and_revoke_check_the_store_and_audit(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        root = op("root", "root", "r" * 32)
        await records.create_property(db, "p1", "One")
        with pytest.raises(NotFound, match="p2"):
            await operators.create_by(db, root, "pam", "property_manager", ["p1", "p2"])
        row, token = await operators.create_by(db, root, "pam", "property_manager", ["p1", "p1"])
        assert row.properties == ["p1"] and token.startswith("pvo_")
        assert operators.authenticate(db, f"Bearer {token}").id == row.id
        await operators.revoke_by(db, root, row.id)
        with pytest.raises(NotFound):
            await operators.revoke_by(db, root, row.id)
        await db.flush()
        kinds = [r.type for r in records.list_audit(db)]
        assert kinds == ["operator.revoked", "operator.created"]
