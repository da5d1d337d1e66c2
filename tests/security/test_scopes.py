from pentarun.security.scopes import SCOPES, Level, Scope, needs_approval, risk_score


def test_risk_is_the_capped_sum():
    assert risk_score(["properties:read", "cameras:read"]) == 15
    assert risk_score(list(SCOPES)) == 100
    assert risk_score(["cameras:read", "cameras:read"]) == 10


def test_auto_approve_level_decides():
    assert not needs_approval("cameras:read", Level.READ)
    assert needs_approval("cameras:write", Level.READ)
    assert not needs_approval("cameras:write", Level.WRITE)
    assert needs_approval("proxy:egress", Level.WRITE)


def test_admin_level_never_auto_approves():
    table = {"x:admin": Scope("x:admin", Level.ADMIN, 90, "")}
    assert needs_approval("x:admin", Level.ADMIN, table)
