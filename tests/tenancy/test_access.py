"""API keys and the permission table, tested against expectations written out here.

Nothing below derives what is allowed from the product's own ``PERMISSIONS``: the table in this
file is the specification, so a wrong entry in the product's table fails a test. Keys are real
(minted, stored hashed, revoked) in a SQLite database under tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.store import Database
from alertengine.tenancy import access
from alertengine.tenancy.access import (
    AccessError,
    Principal,
    authenticate,
    authorize,
    mint_key,
)
from alertengine.tenancy.tenants import create_key, create_tenant, revoke_key
from alertengine.web.app import create_app

# --- the specification ----------------------------------------------------------------------------

ROLES = ("appliance_admin", "scrape", "admin", "operator", "auditor", "viewer")
APPLIANCE_ROLES = ("appliance_admin", "scrape")     # keys without a tenant
TENANT_ROLES = ("admin", "operator", "auditor", "viewer")

# permission              appliance_admin  scrape  admin  operator  auditor  viewer
EXPECTED: dict[str, tuple[int, int, int, int, int, int]] = {
    "tenant.create":        (1,               0,      0,     0,        0,       0),
    "tenant.list":          (1,               0,      0,     0,        0,       0),
    "tenant.read":          (1,               0,      1,     1,        1,       1),
    "tenant.shadow.read":   (1,               0,      1,     1,        1,       1),
    "tenant.shadow.write":  (1,               0,      1,     0,        0,       0),
    "key.manage":           (1,               0,      1,     0,        0,       0),
    "service.read":         (1,               0,      1,     1,        1,       1),
    "service.write":        (1,               0,      1,     0,        0,       0),
    "channel.read":         (1,               0,      1,     0,        1,       0),
    "channel.write":        (1,               0,      1,     0,        0,       0),
    "incident.read":        (1,               0,      1,     1,        1,       1),
    "incident.act":         (1,               0,      1,     1,        0,       0),
    "policy.read":          (1,               0,      1,     1,        1,       1),
    "policy.write":         (1,               0,      1,     0,        0,       0),
    "notify.read":          (1,               0,      1,     1,        1,       1),
    "notify.write":         (1,               0,      1,     0,        0,       0),
    "silence.write":        (1,               0,      1,     1,        0,       0),
    "slo.read":             (1,               0,      1,     1,        0,       0),
    "metrics.read":         (1,               1,      0,     0,        0,       0),
    "ledger.read":          (1,               0,      1,     0,        1,       0),
    "ledger.export":        (1,               0,      1,     0,        1,       0),
}
CASES = [(perm, role, bool(row[i])) for perm, row in EXPECTED.items() for i, role in enumerate(ROLES)]

KEY_RE = re.compile(r"^ae_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")
RAW_ALPHABET = string.ascii_letters + string.digits + "-_"
GHOST_TENANT = "t_00000000deadbeef"

REQUIRED = "an API key is required: Authorization: Bearer <key>"
MALFORMED = "malformed API key"
UNKNOWN = "unknown or revoked API key"


# --- fixtures -------------------------------------------------------------------------------------

@dataclass
class Keys:
    db: Database
    tenants: dict[str, str]               # label -> tenant id
    secrets: dict[tuple[str, str], str]   # (label, role) -> secret; label "-" for keys without a tenant
    ids: dict[tuple[str, str], str]       # (label, role) -> key id
    revoked: str = ""                     # a revoked admin key of tenant a
    revoked_id: str = ""

    def auth(self, label: str, role: str) -> Principal:
        return authenticate(self.db.read_conn(), f"Bearer {self.secrets[(label, role)]}")


@pytest.fixture
def keys(db: Database) -> Iterator[Keys]:
    k = Keys(db, {}, {}, {})
    root, secret = db.write_sync(create_key(None, "appliance_admin", "root", "test"))
    k.secrets[("-", "appliance_admin")], k.ids[("-", "appliance_admin")] = secret, root.id
    made, k.secrets[("-", "scrape")] = db.write_sync(create_key(None, "scrape", "prom", "test"))
    k.ids[("-", "scrape")] = made.id
    for label in ("a", "b"):
        tenant = db.write_sync(create_tenant(f"tenant-{label}", "test")).id
        k.tenants[label] = tenant
        for role in TENANT_ROLES:
            key, secret = db.write_sync(create_key(tenant, role, f"{label}-{role}", "test"))
            k.secrets[(label, role)], k.ids[(label, role)] = secret, key.id
    old, secret = db.write_sync(create_key(k.tenants["a"], "admin", "a-old", "test"))
    db.write_sync(revoke_key(old.id, k.tenants["a"], "test"))
    k.revoked, k.revoked_id = secret, old.id
    yield k


def refused(conn: object, header: str | None) -> AccessError:
    with pytest.raises(AccessError) as info:
        authenticate(conn, header)  # type: ignore[arg-type]
    return info.value


def split(secret: str) -> tuple[str, str]:
    """(key id, raw part) of ``ae_<id>_<raw>``."""
    assert secret.startswith("ae_")
    return secret[3:15], secret[16:]


def other_char(c: str) -> str:
    return "A" if c != "A" else "B"


# --- the table --------------------------------------------------------------------------------------

def test_the_products_roles_and_permissions_are_exactly_those_specified_here() -> None:
    # A new permission (or role) must be added to EXPECTED above, with a decision for every role.
    assert set(access.PERMISSIONS) == set(EXPECTED)
    assert access.ROLES == ROLES
    assert access.APPLIANCE_ROLES == APPLIANCE_ROLES
    assert access.TENANT_ROLES == TENANT_ROLES
    assert access.SCRAPE == "scrape"
    assert access.APPLIANCE_ADMIN == "appliance_admin"


@pytest.mark.parametrize("permission,role,allowed", CASES, ids=[f"{p}-{r}" for p, r, _ in CASES])
def test_every_role_and_permission_through_authorize(permission: str, role: str, allowed: bool) -> None:
    tenant = None if role in APPLIANCE_ROLES else "t_aaaaaaaaaaaaaaaa"
    p = Principal("0123456789ab", tenant, role, "k")
    for in_tenant in ("t_aaaaaaaaaaaaaaaa", None):
        if role == "scrape" and in_tenant is not None:   # it acts in no tenant, whatever the permission
            with pytest.raises(AccessError) as info:
                authorize(p, permission, in_tenant)
            assert (info.value.status, info.value.message) == (403, "this key may not act in that tenant")
            assert p.may(permission) == allowed
        elif allowed:
            authorize(p, permission, in_tenant)
            assert p.may(permission)
        else:
            with pytest.raises(AccessError) as info:
                authorize(p, permission, in_tenant)
            assert (info.value.status, info.value.code) == (403, "forbidden")
            assert info.value.message == f"role {role!r} may not {permission.replace('.', ' ')}"
            assert not p.may(permission)


def test_the_table_through_real_keys(keys: Keys) -> None:
    checked = 0
    for permission, row in EXPECTED.items():
        for role, allowed in zip(ROLES, row):
            label = "-" if role in APPLIANCE_ROLES else "a"
            p = keys.auth(label, role)
            in_tenant = None if role == "scrape" else keys.tenants["a"]   # a scrape key names no tenant
            if allowed:
                authorize(p, permission, in_tenant)
            else:
                with pytest.raises(AccessError) as info:
                    authorize(p, permission, in_tenant)
                assert info.value.status == 403
            checked += 1
    assert checked == len(EXPECTED) * 6


def test_an_unknown_permission_is_a_programming_error_not_a_grant() -> None:
    """Whoever asks, and in whichever tenant: a misspelt permission is never an answer of 403 or a grant."""
    admin = Principal("0123456789ab", None, "appliance_admin", "root")
    viewer = Principal("0123456789ab", "t_aaaaaaaaaaaaaaaa", "viewer", "v")
    for permission in ("tenant.delete", "", "TENANT.CREATE", "tenant.create "):
        for p, tenant in ((admin, None), (admin, GHOST_TENANT), (viewer, "t_aaaaaaaaaaaaaaaa"),
                          (viewer, "t_bbbbbbbbbbbbbbbb"), (viewer, None)):
            with pytest.raises(KeyError, match=re.escape(f"unknown permission {permission!r}")):
                authorize(p, permission, tenant)


def test_principals_and_minted_keys_are_immutable() -> None:
    p = Principal("0123456789ab", "t_aaaaaaaaaaaaaaaa", "viewer", "v")
    for name, value in (("role", "admin"), ("tenant", None), ("key_id", "x")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(p, name, value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mint_key().secret = "x"  # type: ignore[misc]
    assert p.role == "viewer" and p.tenant == "t_aaaaaaaaaaaaaaaa"


def test_the_appliance_admin_holds_every_permission_in_every_tenant(keys: Keys) -> None:
    admin = keys.auth("-", "appliance_admin")
    assert admin.tenant is None and admin.role == "appliance_admin"
    for permission in EXPECTED:
        for tenant in (keys.tenants["a"], keys.tenants["b"], GHOST_TENANT, None):
            authorize(admin, permission, tenant)  # existence of the tenant is the route's 404, not a 403
    assert admin.may_act_in(keys.tenants["a"]) and admin.may_act_in(GHOST_TENANT)


@pytest.mark.parametrize("role", TENANT_ROLES)
def test_tenant_keys_are_confined_to_their_tenant(keys: Keys, role: str) -> None:
    p = keys.auth("a", role)
    a, b = keys.tenants["a"], keys.tenants["b"]
    assert p.tenant == a and p.may_act_in(a)
    authorize(p, "tenant.read", a)
    errors = []
    for other in (b, GHOST_TENANT, a + "0", a[:-1], a.upper(), "", " " + a):
        assert not p.may_act_in(other)
        for permission in ("tenant.read", "incident.read"):
            with pytest.raises(AccessError) as info:
                authorize(p, permission, other)
            errors.append((info.value.status, info.value.code, info.value.message))
    # another tenant's id is refused exactly as one that does not exist (no existence oracle)
    assert set(errors) == {(403, "forbidden", "this key may not act in that tenant")}





@pytest.mark.parametrize("other", ["\u00e9", "t_aaaaaaaaaaaaaaa\u00e9", "t_\u0430aaaaaaaaaaaaaaa"])
def test_a_non_ascii_tenant_id_is_refused_like_any_other(other: str) -> None:
    p = Principal("0123456789ab", "t_aaaaaaaaaaaaaaaa", "viewer", "v")
    with pytest.raises(AccessError) as info:
        authorize(p, "tenant.read", other)
    assert (info.value.status, info.value.message) == (403, "this key may not act in that tenant")



async def test_a_non_ascii_tenant_in_the_path_answers_403_not_500(keys: Keys, data_dir: DataDir,
                                                                  config: Config) -> None:
    app = create_app(config, data_dir, keys.db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://appliance") as client:
            auth = {"Authorization": f"Bearer {keys.secrets[('a', 'admin')]}"}
            ghost = await client.get(f"/api/tenants/{GHOST_TENANT}", headers=auth)
            assert ghost.status_code == 403
            reply = await client.get("/api/tenants/%C3%A9", headers=auth)
            assert reply.status_code == 403, reply.text
            assert reply.json() == ghost.json()
    finally:
        await asyncio.gather(*app.state.background, return_exceptions=True)
        await app.state.runtime.http.aclose()


def test_tenant_admin_cannot_reach_appliance_permissions_in_its_own_tenant(keys: Keys) -> None:
    p = keys.auth("a", "admin")
    for permission in ("tenant.create", "tenant.list", "metrics.read"):
        for tenant in (keys.tenants["a"], None):
            with pytest.raises(AccessError) as info:
                authorize(p, permission, tenant)
            assert info.value.status == 403 and info.value.code == "forbidden"


def test_access_error_carries_status_code_and_message() -> None:
    e = AccessError(401, "unauthenticated", "no")
    assert (e.status, e.code, e.message, str(e)) == (401, "unauthenticated", "no", "no")


# --- authentication ---------------------------------------------------------------------------------

def test_every_real_key_authenticates_as_itself(keys: Keys) -> None:
    conn = keys.db.read_conn()
    for (label, role), secret in keys.secrets.items():
        p = authenticate(conn, f"Bearer {secret}")
        tenant = None if label == "-" else keys.tenants[label]
        name = {"appliance_admin": "root", "scrape": "prom"}[role] if label == "-" else f"{label}-{role}"
        assert p == Principal(keys.ids[(label, role)], tenant, role, name)
        assert p.actor == f"apikey:{keys.ids[(label, role)]}"


def test_the_scheme_is_case_insensitive_and_surrounding_space_is_ignored(keys: Keys) -> None:
    conn, secret = keys.db.read_conn(), keys.secrets[("a", "operator")]
    for header in (f"bearer {secret}", f"BEARER {secret}", f"Bearer  {secret} ", f"Bearer {secret}\n"):
        assert authenticate(conn, header).key_id == keys.ids[("a", "operator")]


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_header_is_refused(keys: Keys, header: str | None) -> None:
    e = refused(keys.db.read_conn(), header)
    assert (e.status, e.code, e.message) == (401, "unauthenticated", REQUIRED)


def test_a_real_key_id_with_a_wrong_secret_is_refused(keys: Keys) -> None:
    conn = keys.db.read_conn()
    key_id, raw = split(keys.secrets[("a", "admin")])
    wrong = [
        "A" * 43,
        "-" * 43,
        raw[::-1],
        raw.swapcase() if raw.swapcase() != raw else "B" * 43,
        hashlib.sha256(raw.encode()).hexdigest()[:43],
    ]
    for candidate in wrong:
        assert candidate != raw and len(candidate) == 43
        e = refused(conn, f"Bearer ae_{key_id}_{candidate}")
        assert (e.status, e.code, e.message) == (401, "unauthenticated", UNKNOWN), candidate


def test_near_miss_secrets_are_refused(keys: Keys) -> None:
    """One character changed anywhere (so a shared prefix of any length buys nothing), truncated,
    extended, and the right secret under another key id."""
    conn = keys.db.read_conn()
    secret = keys.secrets[("a", "admin")]
    key_id, raw = split(secret)
    for i in range(len(raw)):  # the same secret up to (and after) position i
        changed = raw[:i] + other_char(raw[i]) + raw[i + 1:]
        e = refused(conn, f"Bearer ae_{key_id}_{changed}")
        assert (e.status, e.message) == (401, UNKNOWN), i
    for i in range(len(key_id)):  # one hex digit of the key id changed
        changed_id = key_id[:i] + ("0" if key_id[i] != "0" else "1") + key_id[i + 1:]
        e = refused(conn, f"Bearer ae_{changed_id}_{raw}")
        assert (e.status, e.message) == (401, UNKNOWN), i
    for text in (secret[:-1], secret[:-10], secret + "A", secret + raw):
        e = refused(conn, f"Bearer {text}")
        assert (e.status, e.code, e.message) == (401, "unauthenticated", MALFORMED)
    for label, role in (("a", "operator"), ("b", "admin"), ("-", "appliance_admin")):
        other_id = keys.ids[(label, role)]
        e = refused(conn, f"Bearer ae_{other_id}_{raw}")
        assert (e.status, e.message) == (401, UNKNOWN), (label, role)
        other_raw = split(keys.secrets[(label, role)])[1]
        e = refused(conn, f"Bearer ae_{key_id}_{other_raw}")
        assert (e.status, e.message) == (401, UNKNOWN), (label, role)
    assert authenticate(conn, f"Bearer {secret}").key_id == key_id  # and the real one still works


def test_a_revoked_key_is_refused_like_an_unknown_one(keys: Keys) -> None:
    conn = keys.db.read_conn()
    revoked = refused(conn, f"Bearer {keys.revoked}")
    _, raw = split(keys.revoked)
    unknown = refused(conn, f"Bearer ae_{'0' * 12}_{raw}")
    wrong = refused(conn, f"Bearer ae_{keys.revoked_id}_{'A' * 43}")
    assert (revoked.status, revoked.code, revoked.message) == (401, "unauthenticated", UNKNOWN)
    assert {(e.status, e.code, e.message) for e in (revoked, unknown, wrong)} == {(401, "unauthenticated", UNKNOWN)}
    # revoking one key leaves the others working
    assert keys.auth("a", "admin").role == "admin"


def test_revoking_a_key_refuses_it_at_once(keys: Keys) -> None:
    p = keys.auth("b", "viewer")
    keys.db.write_sync(revoke_key(p.key_id, keys.tenants["b"], "test"))
    e = refused(keys.db.read_conn(), f"Bearer {keys.secrets[('b', 'viewer')]}")
    assert (e.status, e.message) == (401, UNKNOWN)


def test_malformed_headers_are_refused(keys: Keys) -> None:
    conn = keys.db.read_conn()
    secret = keys.secrets[("a", "admin")]
    key_id, raw = split(secret)
    headers = [
        "Bearer", "Bearer ", "Bearer  ", " ", secret, f"Token {secret}", f"Basic {secret}", f"Bearer: {secret}",
        f"Bearer{secret}", f"Bearer {secret} extra", f"Bearer {secret}\nX", f"Bearer {secret},{secret}",
        f"Bearer AE_{key_id}_{raw}", f"Bearer ae_{key_id.upper()}_{raw}" if key_id.upper() != key_id else "Bearer x",
        f"Bearer ae-{key_id}-{raw}", f"Bearer ae_{key_id}{raw}", f"Bearer ae__{raw}", f"Bearer ae_{key_id}_",
        f"Bearer ae_{key_id[:-1]}_{raw}", f"Bearer ae_{key_id}0_{raw}", f"Bearer ae_{key_id}_{raw[:-1]}+",
        f"Bearer ae_{key_id}_{raw[:-1]}=", f"Bearer ae_{key_id}_{raw[:-1]}.", f"Bearer ae_{key_id}_{raw[:-1]}\u00e9",
        f"Bearer x{secret}", "Bearer nope", "Basic YTpi", f"Bearer ae_{'g' * 12}_{raw}",
    ]
    for header in headers:
        e = refused(conn, header)
        assert (e.status, e.code, e.message) == (401, "unauthenticated", MALFORMED), header


def test_every_presented_key_is_checked_by_one_constant_time_digest_comparison(
        keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behaviour, not timing: the secret is never compared as text (which could stop at the first
    differing character); its SHA-256 is compared with hmac.compare_digest, once, on every path,
    including malformed and unknown keys, which compare a dummy digest."""
    real = hmac.compare_digest
    calls: list[tuple[bytes, bytes]] = []

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    conn = keys.db.read_conn()
    secret = keys.secrets[("a", "admin")]
    key_id, raw = split(secret)
    stored = bytes(conn.execute("SELECT key_hash FROM api_keys WHERE id = ?", (key_id,)).fetchone()[0])
    assert stored == hashlib.sha256(raw.encode()).digest()
    near = raw[:-1] + other_char(raw[-1])
    cases = [
        (f"Bearer {secret}", True, (hashlib.sha256(raw.encode()).digest(), stored)),
        (f"Bearer ae_{key_id}_{near}", False, (hashlib.sha256(near.encode()).digest(), stored)),
        (f"Bearer ae_{'0' * 12}_{raw}", False, None),
        (f"Bearer {keys.revoked}", False, None),
        ("Bearer nope", False, None),
    ]
    for header, ok, expected_args in cases:
        calls.clear()
        if ok:
            authenticate(conn, header)
        else:
            refused(conn, header)
        assert len(calls) == 1, header
        a, b = calls[0]
        assert isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b) == 32, header
        assert raw.encode() not in (a, b)
        if expected_args is not None:
            assert calls[0] == expected_args


def test_tenant_comparison_in_may_act_in_is_exact() -> None:
    p = Principal("0123456789ab", "t_abc", "viewer", "k")
    assert p.may_act_in("t_abc")
    for other in ("t_ab", "t_abcd", "T_ABC", "t_abc ", ""):
        assert not p.may_act_in(other)


def test_a_lone_surrogate_on_either_side_is_compared_not_raised() -> None:
    # a path may decode to any text, a lone surrogate included; it is a tenant like any other
    odd = "t_\ud800"
    assert not Principal("0123456789ab", "t_abc", "viewer", "k").may_act_in(odd)
    assert not Principal("0123456789ab", odd, "viewer", "k").may_act_in("t_abc")
    assert Principal("0123456789ab", odd, "viewer", "k").may_act_in(odd)


# --- minting ----------------------------------------------------------------------------------------

def test_minted_keys_have_the_documented_shape_and_store_only_a_hash() -> None:
    seen = set()
    for _ in range(20):
        new = mint_key()
        assert KEY_RE.match(new.secret), new.secret
        assert re.fullmatch(r"[0-9a-f]{12}", new.key_id)
        key_id, raw = split(new.secret)
        assert key_id == new.key_id
        assert set(raw) <= set(RAW_ALPHABET) and len(raw) == 43
        assert new.key_hash == hashlib.sha256(raw.encode()).digest()
        assert raw.encode() not in new.key_hash and new.secret.encode() not in new.key_hash
        seen.add(new.key_id)
    assert len(seen) == 20


def test_a_freshly_created_key_authenticates_and_its_secret_is_not_stored(keys: Keys) -> None:
    key, secret = keys.db.write_sync(create_key(keys.tenants["b"], "auditor", "fresh", "test"))
    p = authenticate(keys.db.read_conn(), f"Bearer {secret}")
    assert p == Principal(key.id, keys.tenants["b"], "auditor", "fresh")
    row = keys.db.read_conn().execute("SELECT * FROM api_keys WHERE id = ?", (key.id,)).fetchone()
    _, raw = split(secret)
    assert all(raw not in str(v) and secret not in str(v) for v in row)
