"""The scrape role: a key a Prometheus job holds. It reads /metrics and nothing else, acts in no
tenant, and is made without a tenant (it sees every tenant's figures, so no tenant may mint one).

Expectations are written out here, never derived from the product's tables (test_access.py holds
the whole permission table; these are the scrape key's own rules, case by case)."""

from __future__ import annotations

import pytest

from alertengine.errors import ConflictError
from alertengine.store import Database
from alertengine.tenancy.access import AccessError, Principal, authenticate, authorize, role_fits
from alertengine.tenancy.tenants import create_key, create_tenant, ensure_admin_key, revoke_key

TENANT = "t_aaaaaaaaaaaaaaaa"
GHOST = "t_00000000deadbeef"
SCRAPER = Principal("0123456789ab", None, "scrape", "prometheus")
NOT_IN_TENANT = (403, "forbidden", "this key may not act in that tenant")

# Every permission there is, and the one a scrape key holds.
ALL = ("tenant.create", "tenant.list", "tenant.read", "tenant.shadow.read", "tenant.shadow.write", "key.manage",
       "service.read", "service.write", "channel.read", "channel.write", "incident.read", "incident.act",
       "policy.read", "policy.write", "notify.read", "notify.write", "silence.write", "slo.read", "metrics.read",
       "ledger.read", "ledger.export")
HELD = {"metrics.read"}

# (tenant of the key, role) -> may such a key be made?
FITS: dict[tuple[str | None, str], bool] = {
    (None, "appliance_admin"): True, (None, "scrape"): True,
    (None, "admin"): False, (None, "operator"): False, (None, "auditor"): False, (None, "viewer"): False,
    (TENANT, "appliance_admin"): False, (TENANT, "scrape"): False,
    (TENANT, "admin"): True, (TENANT, "operator"): True, (TENANT, "auditor"): True, (TENANT, "viewer"): True,
    (None, ""): False, (None, "SCRAPE"): False, (None, "scrape "): False, (None, "scraper"): False,
    (TENANT, ""): False, (TENANT, "Admin"): False, (TENANT, "root"): False,
}


def refusal(principal: Principal, permission: str, tenant: str | None) -> tuple[int, str, str]:
    with pytest.raises(AccessError) as info:
        authorize(principal, permission, tenant)
    return info.value.status, info.value.code, info.value.message


@pytest.mark.parametrize("permission", ALL)
def test_a_scrape_key_holds_metrics_read_and_nothing_else(permission: str) -> None:
    if permission in HELD:
        authorize(SCRAPER, permission, None)
        assert SCRAPER.may(permission)
    else:
        assert not SCRAPER.may(permission)
        assert refusal(SCRAPER, permission, None) == (403, "forbidden",
                                                      f"role 'scrape' may not {permission.replace('.', ' ')}")


@pytest.mark.parametrize("permission", ALL)
def test_a_scrape_key_acts_in_no_tenant_even_for_what_it_holds(permission: str) -> None:
    for tenant in (TENANT, GHOST, "", "t_"):
        assert refusal(SCRAPER, permission, tenant) == NOT_IN_TENANT


def test_only_the_appliance_admin_among_keys_without_a_tenant_acts_in_tenants() -> None:
    admin = Principal("0123456789ab", None, "appliance_admin", "root")
    for tenant in (TENANT, GHOST, ""):
        assert admin.may_act_in(tenant)
        assert not SCRAPER.may_act_in(tenant)
        # a row that should never exist (a tenant role without a tenant) gets no tenant either
        for role in ("admin", "operator", "auditor", "viewer"):
            assert not Principal("0123456789ab", None, role, "broken").may_act_in(tenant)


@pytest.mark.parametrize("permission", ["metrics.read", "tenant.read", "incident.read"])
def test_tenant_roles_still_cannot_read_metrics(permission: str) -> None:
    expected = {"metrics.read": False, "tenant.read": True, "incident.read": True}[permission]
    for role in ("admin", "operator", "auditor", "viewer"):
        p = Principal("0123456789ab", TENANT, role, "k")
        assert p.may(permission) is expected, role
        if not expected:
            for tenant in (TENANT, None):
                assert refusal(p, permission, tenant) == (403, "forbidden", f"role {role!r} may not metrics read")


@pytest.mark.parametrize("tenant,role", list(FITS), ids=[f"{t or '-'}:{r or 'empty'}" for t, r in FITS])
def test_which_roles_a_key_may_be_made_with(tenant: str | None, role: str) -> None:
    assert role_fits(tenant, role) is FITS[(tenant, role)]


def test_a_stored_scrape_key_authenticates_as_a_scraper_without_a_tenant(db: Database) -> None:
    made, secret = db.write_sync(create_key(None, "scrape", "prometheus", "test"))
    key_id = made.id
    p = authenticate(db.read_conn(), f"Bearer {secret}")
    assert p == Principal(key_id, None, "scrape", "prometheus")
    authorize(p, "metrics.read", None)
    db.write_sync(revoke_key(key_id, None, "test"))
    with pytest.raises(AccessError) as info:
        authenticate(db.read_conn(), f"Bearer {secret}")
    assert (info.value.status, info.value.message) == (401, "unknown or revoked API key")


def test_a_tenant_cannot_mint_a_scrape_key(db: Database) -> None:
    tenant = db.write_sync(create_tenant("payments", "test")).id
    with pytest.raises(ConflictError, match="role must be one of admin, operator, auditor, viewer, got 'scrape'"):
        create_key(tenant, "scrape", "prometheus", "test")


def test_create_key_makes_a_scrape_key_without_a_tenant(db: Database) -> None:
    key, secret = db.write_sync(create_key(None, "scrape", "prometheus", "test"))
    assert (key.tenant, key.role) == (None, "scrape")
    assert authenticate(db.read_conn(), f"Bearer {secret}") == Principal(key.id, None, "scrape", "prometheus")


def test_a_scrape_key_is_no_reason_to_withhold_a_new_admin_key(db: Database) -> None:
    root, _ = db.write_sync(create_key(None, "appliance_admin", "root", "test"))
    db.write_sync(create_key(None, "scrape", "prometheus", "test"))
    db.write_sync(revoke_key(root.id, None, "test"))
    secret = db.write_sync(ensure_admin_key())   # the only live key without a tenant is the scraper's
    assert secret is not None and authenticate(db.read_conn(), f"Bearer {secret}").role == "appliance_admin"
